//! What one audit record says, typed: its `kind` and the fields each kind carries. Every record the
//! engine and the front ends write is built here; [`schema`] generates `schemas/audit.schema.json` (a
//! line of `audit.jsonl`, with the `seq`, `ts`, `prev`, `mac` and `hash` the log adds), and a test keeps
//! the committed file equal to it.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

/// Why a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A run began (its plan digest, inputs shown redacted, effects).
    RunStarted,
    /// A run ended, with its status.
    RunFinished,
    /// A call is about to run (fsync'd first for calls that can write).
    Intent,
    /// A call ran: whether it succeeded, its error, how long it took.
    Outcome,
    /// A call or a run was refused (an opt-in that is off; the policy: read-only, a freeze, a rule, a
    /// missing approval); nothing ran.
    Refused,
    /// A call was turned down before it could run (invalid arguments, a template that failed, a front
    /// end's refusal).
    Rejected,
    /// A front end's own call (one that reads infra's records).
    Call,
    /// A person approved a plan digest (`infra approve`): who, when, until when, the note.
    Approved,
    /// A person revoked an approval before it was used.
    Revoked,
    /// Retention removed runs past the policy (`pruned`: what and how many bytes); `front_end` says
    /// who: `cli`, `mcp`, or `auto` (a pass at the end of a run).
    Pruned,
}

/// One audit record, before the log seals it. Fields a kind does not carry are left out.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AuditRecord {
    pub kind: AuditKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// The step of the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `mcp` for a front end's records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front_end: Option<String>,
    /// The call's effect (`read`, `write`, `destructive`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    /// A run's effects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effects: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_digest: Option<String>,
    /// Redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// The run a resumed run resumes (`run_started`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
    /// The call's rendered arguments, redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// `{kind, message, hint?}`, redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// A run's final status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The policy's decision on a run and the rule that made it (`decision`, `rule`, `step`, `reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
    /// An approval: given, revoked, or used by the run (`id`, `approver`, `digest`, `expires_at`, `note`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Value>,
    /// What retention removed: `runs`, `dirs`, `journals`, `jobs`, `approvals`, `bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<Value>,
}

impl AuditRecord {
    /// A record of `kind` with no other field yet.
    pub fn new(kind: AuditKind) -> Self {
        AuditRecord {
            kind,
            run_id: None,
            runbook: None,
            step: None,
            attempt: None,
            tool: None,
            action: None,
            front_end: None,
            effect: None,
            effects: None,
            plan_digest: None,
            inputs: None,
            depth: None,
            resumed_from: None,
            args: None,
            ok: None,
            error: None,
            duration_ms: None,
            status: None,
            policy: None,
            approval: None,
            pruned: None,
        }
    }

    /// The same record as another kind (an attempt's intent, then its outcome).
    pub fn as_kind(&self, kind: AuditKind) -> Self {
        AuditRecord {
            kind,
            ..self.clone()
        }
    }

    /// Whether every field is written as it is: each string at most `max` bytes and each value as
    /// `value_fits` says (the log cuts what does not fit). A new field must be listed here.
    pub(crate) fn fits(&self, max: usize, value_fits: &dyn Fn(&Value) -> bool) -> bool {
        let strings = [
            &self.run_id,
            &self.runbook,
            &self.step,
            &self.tool,
            &self.action,
            &self.front_end,
            &self.effect,
            &self.effects,
            &self.plan_digest,
            &self.resumed_from,
            &self.status,
        ];
        let values = [
            &self.inputs,
            &self.args,
            &self.error,
            &self.policy,
            &self.approval,
            &self.pruned,
        ];
        strings
            .iter()
            .all(|s| s.as_ref().is_none_or(|s| s.len() <= max))
            && values.iter().all(|v| v.as_ref().is_none_or(value_fits))
    }

    /// The fields as the log writes them.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A whole line of `audit.jsonl`, for the schema: the record between what the log adds.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct AuditLine {
    /// 1, 2, 3, … in file order.
    seq: u64,
    /// RFC 3339, UTC.
    ts: String,
    /// SHA-256 (hex) of the previous line's bytes; 64 zeros for the first.
    prev: String,
    #[serde(flatten)]
    record: AuditRecord,
    /// With `INFRA_AUDIT_KEY`: HMAC-SHA256 (hex) of the line's bytes before it.
    mac: Option<String>,
    /// SHA-256 (hex) of the line's bytes before it.
    hash: String,
}

/// The JSON Schema of one line of `audit.jsonl`.
pub fn schema() -> Value {
    let mut s = schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12())
        .into_root_schema_for::<AuditLine>()
        .to_value();
    if let Some(o) = s.as_object_mut() {
        o.insert(
            "$id".into(),
            "https://infra.invalid/schemas/audit.schema.json".into(),
        );
        o.insert("title".into(), "infra audit record".into());
        o.insert(
            "description".into(),
            "One line of the audit log (`<profiles>/audit.jsonl`).".into(),
        );
    }
    s
}
