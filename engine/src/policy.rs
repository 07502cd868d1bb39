//! Change control: what a plan may do, from `<profiles>/policy.yaml` (or `.yml`, `.json`) and the
//! read-only switch.
//!
//! A policy decides each node of a plan `allow`, `approve` (needs an approval bound to the rendered
//! plan's digest, see `approval.rs`) or `deny`; the plan's decision is the strictest of its nodes',
//! with the rule that made it. The order, first that applies wins: read-only mode (`read_only: true`
//! or `INFRA_READ_ONLY=1`: every node above `read` is denied), a `freeze` window (UTC) that holds the
//! current time (writes denied), the first `rules` entry whose `tool`, `action`, `target`, `label`
//! and `effect` all match, then `effects.<effect>`, then the defaults (`read` and `write` allowed,
//! `destructive` and `irreversible` approved). A policy file with errors leaves the engine with no
//! policy: every plan above `read` is denied (`policy_invalid`) until the file is fixed. The file is
//! read once per engine (process start, or when the MCP server's roots change). Nothing here reads
//! the clock or the environment: the caller passes the time and the switch.
//!
//! The file also says how long runs are kept (`retention: {max_age_days: 30, max_runs: 10000,
//! keep_failed_days: 90}`, the defaults; `keep_failed_days` at least `max_age_days`, a located error
//! otherwise; see `retention.rs`) and when the audit log rotates (`audit: {rotate_bytes}`, 64 MiB).
//! A file with errors prunes nothing (`Policy::retention` is `None`) and rotates at the default.

use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use dsl::{Code, Diagnostic, Effect, SourceFile};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What policy says of a node or a plan. Ordered: `Allow` < `Approve` < `Deny`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Runs.
    Allow,
    /// Runs only with an approval of the rendered plan's digest, made by a person.
    Approve,
    /// Never runs.
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

/// Effect levels as a policy names them (`irreversible` comes from capabilities).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Read,
    Write,
    Destructive,
    Irreversible,
}

impl From<Effect> for Level {
    fn from(e: Effect) -> Self {
        match e {
            Effect::Read => Level::Read,
            Effect::Write => Level::Write,
            Effect::Destructive => Level::Destructive,
        }
    }
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Destructive => "destructive",
            Level::Irreversible => "irreversible",
        }
    }
}

/// A decision per effect level.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Effects {
    pub read: Option<Decision>,
    pub write: Option<Decision>,
    pub destructive: Option<Decision>,
    pub irreversible: Option<Decision>,
}

/// One rule: every field given must match the node; the first rule that matches decides.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name for the audit log (else `rules[<index>]`).
    pub name: Option<String>,
    /// A tool (`psql`, `ssh`, …).
    pub tool: Option<String>,
    /// An action of that tool (`exec`).
    pub action: Option<String>,
    /// A target, as the call names it (`target` or `profile_name`).
    pub target: Option<String>,
    /// A label of that target (`targets.yaml`).
    pub label: Option<String>,
    /// The node's effect.
    pub effect: Option<Level>,
    /// What the rule decides.
    pub decision: Decision,
}

/// A change freeze: writes are denied from `from` to `to` (RFC 3339, UTC).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// Start, e.g. `2026-12-24T00:00:00Z`.
    pub from: String,
    /// End (exclusive).
    pub to: String,
    /// Why, for the refusal.
    pub reason: Option<String>,
}

/// A person who may approve: a name and an Ed25519 public key (`ed25519:<64 hex digits>`, printed by
/// `infra approvals keygen`).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    pub name: String,
    #[schemars(regex(pattern = r"^ed25519:[0-9a-f]{64}$"))]
    pub key: String,
}

/// The policy file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Refuse every write, whatever the tool (also `INFRA_READ_ONLY=1`).
    #[serde(default)]
    pub read_only: bool,
    /// A decision per effect level.
    #[serde(default)]
    pub effects: Effects,
    /// Rules by tool, action, target, label and effect; the first that matches wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Change freezes (UTC): writes are denied inside them.
    #[serde(default)]
    pub freeze: Vec<Freeze>,
    /// Who may approve plans that need an approval.
    #[serde(default)]
    pub approvers: Vec<Approver>,
    /// Also let a person approve a plan in the MCP client, when the client supports elicitation
    /// (off by default: it trusts the client to ask a person rather than answer itself).
    #[serde(default)]
    pub elicitation: bool,
    /// How long runs and their records are kept (`infra runs prune`, and automatically).
    #[serde(default)]
    pub retention: Retention,
    /// The audit log's files.
    #[serde(default)]
    pub audit: AuditFiles,
}

/// How long runs are kept: a run is pruned (its row in the run index, its directory, its part of a
/// calls journal) once it is older than `max_age_days`, or when more than `max_runs` runs are newer;
/// a run that did not succeed is kept `keep_failed_days` instead of `max_age_days`. A running run is
/// never pruned. Finished jobs, approval requests and expired approvals go after `max_age_days` too.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Days a run is kept (30).
    #[serde(default = "Retention::default_max_age_days")]
    #[schemars(range(min = 1))]
    pub max_age_days: u32,
    /// The most runs kept; the oldest beyond it are pruned (10000).
    #[serde(default = "Retention::default_max_runs")]
    #[schemars(range(min = 1))]
    pub max_runs: u64,
    /// Days a run that did not succeed is kept (90); at least `max_age_days`.
    #[serde(default = "Retention::default_keep_failed_days")]
    #[schemars(range(min = 1))]
    pub keep_failed_days: u32,
}

impl Retention {
    fn default_max_age_days() -> u32 {
        30
    }
    fn default_max_runs() -> u64 {
        10_000
    }
    fn default_keep_failed_days() -> u32 {
        90
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age_days: Retention::default_max_age_days(),
            max_runs: Retention::default_max_runs(),
            keep_failed_days: Retention::default_keep_failed_days(),
        }
    }
}

/// The audit log's files: `audit.jsonl` is renamed to the next `audit.<n>.jsonl` once it holds
/// `rotate_bytes`, and the chain goes on in a new `audit.jsonl`. Nothing is ever deleted.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditFiles {
    /// The size at which the log is rotated (64 MiB).
    #[serde(default = "AuditFiles::default_rotate_bytes")]
    #[schemars(range(min = 1))]
    pub rotate_bytes: u64,
}

impl AuditFiles {
    fn default_rotate_bytes() -> u64 {
        64 * 1024 * 1024
    }
}

impl Default for AuditFiles {
    fn default() -> Self {
        AuditFiles {
            rotate_bytes: AuditFiles::default_rotate_bytes(),
        }
    }
}

/// The JSON Schema of a policy file (`schemas/policy.schema.json`).
pub fn schema() -> Value {
    let mut s = schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12())
        .into_root_schema_for::<PolicyFile>()
        .to_value();
    if let Some(o) = s.as_object_mut() {
        o.insert(
            "$id".into(),
            "https://infra.invalid/schemas/policy.schema.json".into(),
        );
        o.insert("title".into(), "infra policy".into());
    }
    s
}

fn validator() -> &'static (Value, jsonschema::Validator) {
    static V: OnceLock<(Value, jsonschema::Validator)> = OnceLock::new();
    V.get_or_init(|| {
        let s = schema();
        let v = jsonschema::draft202012::new(&s).expect("the policy schema is valid");
        (s, v)
    })
}

/// A node as policy sees it.
#[derive(Clone, Debug)]
pub struct Subject<'a> {
    pub step: &'a str,
    pub tool: &'a str,
    pub action: &'a str,
    pub effect: Level,
    /// The target the call names, when it names one literally.
    pub target: Option<&'a str>,
    /// That target's labels.
    pub labels: &'a [String],
}

/// A plan's decision and the rule that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// `read_only`, `INFRA_READ_ONLY`, `freeze[0]`, `rules[2]` (or its name), `effects.write`,
    /// `default.destructive`, `policy_invalid`.
    pub rule: String,
    /// The step that decided (the first of the strictest).
    pub step: Option<String>,
    /// Why, in words.
    pub reason: String,
}

impl Verdict {
    pub fn to_json(&self) -> Value {
        json!({"decision": self.decision, "rule": self.rule, "step": self.step, "reason": self.reason})
    }
}

/// The policy an engine runs under: a checked file (or the defaults), or the errors of a bad file.
#[derive(Clone, Debug)]
pub struct Policy {
    file: PolicyFile,
    /// Where it came from (`None`: no file, the defaults).
    pub path: Option<String>,
    /// The file's errors: with any, nothing above `read` runs.
    pub errors: Vec<Diagnostic>,
    /// `INFRA_READ_ONLY=1`.
    pub env_read_only: bool,
}

impl Policy {
    /// The defaults (no file).
    pub fn defaults() -> Policy {
        Policy {
            file: PolicyFile::default(),
            path: None,
            errors: Vec::new(),
            env_read_only: false,
        }
    }

    /// Loads `policy.yaml`, `policy.yml` or `policy.json` from the profiles directory.
    pub fn load(profiles_dir: &Path, env_read_only: bool) -> Policy {
        for name in ["policy.yaml", "policy.yml", "policy.json"] {
            let path = profiles_dir.join(name);
            if path.is_file() {
                let mut p = match crate::ctx::read_source(&path) {
                    Ok(file) => Policy::parse(&file),
                    Err(d) => Policy {
                        errors: vec![d],
                        ..Policy::defaults()
                    },
                };
                p.path = Some(path.display().to_string());
                p.env_read_only = env_read_only;
                return p;
            }
        }
        Policy {
            env_read_only,
            ..Policy::defaults()
        }
    }

    /// Writes each rule's tool by its canonical name (`mcp_ssh` → `ssh`), as `canonical` names tools,
    /// so a rule written with an alias matches the calls of that tool. The engine does this at load
    /// (the names are the action registry's, which this module does not import).
    pub fn canonical_tools(mut self, canonical: impl Fn(&str) -> &str) -> Policy {
        for r in &mut self.file.rules {
            if let Some(t) = &r.tool {
                r.tool = Some(canonical(t).to_owned());
            }
        }
        self
    }

    /// Checks and reads a policy file; errors are located in it.
    pub fn parse(file: &SourceFile) -> Policy {
        let bad = |errors| Policy {
            errors,
            path: Some(file.name().to_owned()),
            ..Policy::defaults()
        };
        let node = match dsl::parse::parse(file) {
            Ok(n) => n,
            Err(d) => return bad(vec![d]),
        };
        let json = match node.to_json() {
            Value::Null => json!({}),
            v => v,
        };
        let (schema, v) = validator();
        let diags =
            dsl::schema::check_value(file, &node, &json, "", v, schema, Code::SchemaViolation);
        if !diags.is_empty() {
            return bad(diags);
        }
        let pf: PolicyFile = match serde_json::from_value(json) {
            Ok(p) => p,
            Err(e) => {
                return bad(vec![
                    Diagnostic::error(Code::SchemaViolation, e.to_string()).in_file(file),
                ]);
            }
        };
        let mut diags = Vec::new();
        for (i, f) in pf.freeze.iter().enumerate() {
            let at = |key: &str| {
                node.pointer(&format!("/freeze/{i}/{key}"))
                    .map_or(node.span, |(n, _)| n.span)
            };
            let from = DateTime::parse_from_rfc3339(&f.from);
            let to = DateTime::parse_from_rfc3339(&f.to);
            for (key, r) in [("from", &from), ("to", &to)] {
                if r.is_err() {
                    diags.push(
                        Diagnostic::error(
                            Code::SchemaViolation,
                            format!("`freeze[{i}].{key}` is not an RFC 3339 time"),
                        )
                        .at(file, at(key))
                        .help("write a time such as `2026-12-24T00:00:00Z`"),
                    );
                }
            }
            if let (Ok(a), Ok(b)) = (from, to)
                && a >= b
            {
                diags.push(
                    Diagnostic::error(
                        Code::SchemaViolation,
                        format!("`freeze[{i}]` ends before it starts"),
                    )
                    .at(file, at("to")),
                );
            }
        }
        let r = &pf.retention;
        if r.keep_failed_days < r.max_age_days {
            let at = node
                .pointer("/retention/keep_failed_days")
                .or_else(|| node.pointer("/retention/max_age_days"))
                .map_or(node.span, |(n, _)| n.span);
            diags.push(
                Diagnostic::error(
                    Code::SchemaViolation,
                    format!(
                        "`retention.keep_failed_days` ({}) is less than `retention.max_age_days` ({}): failed runs would go before the others",
                        r.keep_failed_days, r.max_age_days
                    ),
                )
                .at(file, at)
                .help(format!(
                    "set `keep_failed_days` to at least {}, or leave it out (90 days)",
                    r.max_age_days
                )),
            );
        }
        if !diags.is_empty() {
            return bad(diags);
        }
        Policy {
            file: pf,
            path: Some(file.name().to_owned()),
            errors: Vec::new(),
            env_read_only: false,
        }
    }

    /// How long runs are kept (the defaults when the file says nothing); `None` when the file has
    /// errors, so nothing is pruned by a policy that may not say what its author meant.
    pub fn retention(&self) -> Option<&Retention> {
        self.errors.is_empty().then_some(&self.file.retention)
    }

    /// The audit log's rotation size (the default when the file has errors or says nothing).
    pub fn audit_rotate_bytes(&self) -> u64 {
        if self.errors.is_empty() {
            self.file.audit.rotate_bytes
        } else {
            AuditFiles::default().rotate_bytes
        }
    }

    /// The approvers a valid approval may come from.
    pub fn approvers(&self) -> &[Approver] {
        &self.file.approvers
    }

    /// Whether a person may approve in the MCP client (elicitation). Never with a file in error.
    pub fn elicitation(&self) -> bool {
        self.errors.is_empty() && self.file.elicitation
    }

    /// One line for people (`infra doctor`): where it is from, read-only, rules, freezes, approvers.
    pub fn summary(&self) -> String {
        let f = &self.file;
        format!(
            "{}{}; {} rule{}, {} freeze window{}, {} approver{}{}",
            self.path
                .as_deref()
                .unwrap_or("no policy file: the defaults (destructive needs an approval)"),
            if self.read_only() { ", read-only" } else { "" },
            f.rules.len(),
            if f.rules.len() == 1 { "" } else { "s" },
            f.freeze.len(),
            if f.freeze.len() == 1 { "" } else { "s" },
            f.approvers.len(),
            if f.approvers.len() == 1 { "" } else { "s" },
            if self.elicitation() {
                ", approvals in the MCP client (elicitation)"
            } else {
                ""
            },
        )
    }

    /// Whether a rule names a label (then targets are read to find them).
    pub fn wants_labels(&self) -> bool {
        self.file.rules.iter().any(|r| r.label.is_some())
    }

    /// Whether every write is refused.
    pub fn read_only(&self) -> bool {
        self.env_read_only || self.file.read_only
    }

    /// The decision for one node at time `now`.
    pub fn decide_node(&self, s: &Subject<'_>, now: DateTime<Utc>) -> Verdict {
        let v = |decision, rule: String, reason: String| Verdict {
            decision,
            rule,
            step: Some(s.step.to_owned()),
            reason,
        };
        let what = format!("`{}.{}` ({})", s.tool, s.action, s.effect.as_str());
        if s.effect > Level::Read {
            if self.env_read_only {
                return v(
                    Decision::Deny,
                    "INFRA_READ_ONLY".into(),
                    format!("read-only mode (INFRA_READ_ONLY=1) refuses {what}"),
                );
            }
            if self.file.read_only {
                return v(
                    Decision::Deny,
                    "read_only".into(),
                    format!("the policy is read-only (`read_only: true`) and refuses {what}"),
                );
            }
            if !self.errors.is_empty() {
                return v(
                    Decision::Deny,
                    "policy_invalid".into(),
                    format!(
                        "the policy file `{}` has errors ({}), so {what} is refused until it is fixed",
                        self.path.as_deref().unwrap_or("policy"),
                        self.errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                );
            }
            for (i, f) in self.file.freeze.iter().enumerate() {
                let (Ok(from), Ok(to)) = (
                    DateTime::parse_from_rfc3339(&f.from),
                    DateTime::parse_from_rfc3339(&f.to),
                ) else {
                    continue;
                };
                if now >= from && now < to {
                    return v(
                        Decision::Deny,
                        format!("freeze[{i}]"),
                        format!(
                            "a change freeze from {} to {}{} refuses {what}",
                            f.from,
                            f.to,
                            f.reason
                                .as_deref()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        ),
                    );
                }
            }
        }
        for (i, r) in self.file.rules.iter().enumerate() {
            let tool = r.tool.as_deref().is_none_or(|t| t == s.tool);
            let action = r.action.as_deref().is_none_or(|a| a == s.action);
            let target = r.target.as_deref().is_none_or(|t| s.target == Some(t));
            let label = r
                .label
                .as_deref()
                .is_none_or(|l| s.labels.iter().any(|x| x == l));
            let effect = r.effect.is_none_or(|e| e == s.effect);
            if tool && action && target && label && effect {
                let name = r.name.clone().unwrap_or_else(|| format!("rules[{i}]"));
                return v(
                    r.decision,
                    name.clone(),
                    format!("rule `{name}` says {} for {what}", r.decision.as_str()),
                );
            }
        }
        let e = &self.file.effects;
        let given = match s.effect {
            Level::Read => e.read,
            Level::Write => e.write,
            Level::Destructive => e.destructive,
            Level::Irreversible => e.irreversible,
        };
        match given {
            Some(d) => v(
                d,
                format!("effects.{}", s.effect.as_str()),
                format!("the policy says {} for {what}", d.as_str()),
            ),
            None => {
                let d = if s.effect >= Level::Destructive {
                    Decision::Approve
                } else {
                    Decision::Allow
                };
                v(
                    d,
                    format!("default.{}", s.effect.as_str()),
                    if d == Decision::Approve {
                        format!("{what} needs an approval by default")
                    } else {
                        format!("{what} is allowed by default")
                    },
                )
            }
        }
    }

    /// The decision for a plan: the strictest of its nodes' (the first such node's rule).
    pub fn decide<'a>(
        &self,
        nodes: impl IntoIterator<Item = Subject<'a>>,
        now: DateTime<Utc>,
    ) -> Verdict {
        let mut best: Option<Verdict> = None;
        for n in nodes {
            let v = self.decide_node(&n, now);
            if best.as_ref().is_none_or(|b| v.decision > b.decision) {
                best = Some(v);
            }
        }
        best.unwrap_or(Verdict {
            decision: Decision::Allow,
            rule: "default.read".into(),
            step: None,
            reason: "the plan has no step".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(effect: Level) -> Subject<'static> {
        Subject {
            step: "s",
            tool: "psql",
            action: "exec",
            effect,
            target: Some("prod"),
            labels: &[],
        }
    }

    fn parse(text: &str) -> Policy {
        Policy::parse(&SourceFile::new("policy.yaml", text.to_owned()))
    }

    #[test]
    fn defaults_allow_reads_and_writes_and_approve_destructive() {
        let p = Policy::defaults();
        let now = Utc::now();
        assert_eq!(
            p.decide_node(&subject(Level::Read), now).decision,
            Decision::Allow
        );
        assert_eq!(
            p.decide_node(&subject(Level::Write), now).decision,
            Decision::Allow
        );
        let d = p.decide_node(&subject(Level::Destructive), now);
        assert_eq!(d.decision, Decision::Approve);
        assert_eq!(d.rule, "default.destructive");
    }

    #[test]
    fn read_only_freeze_and_rules_decide_in_order() {
        let p = parse(
            "read_only: false\nfreeze:\n  - {from: '2026-01-01T00:00:00Z', to: '2026-01-02T00:00:00Z', reason: audit}\nrules:\n  - {tool: psql, target: prod, effect: write, decision: approve}\n  - {name: allow-dev, label: dev, decision: allow}\neffects: {destructive: deny}\n",
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let inside = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let after = DateTime::parse_from_rfc3339("2026-01-03T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let d = p.decide_node(&subject(Level::Write), inside);
        assert_eq!((d.decision, d.rule.as_str()), (Decision::Deny, "freeze[0]"));
        assert_eq!(
            p.decide_node(&subject(Level::Read), inside).decision,
            Decision::Allow
        );
        let d = p.decide_node(&subject(Level::Write), after);
        assert_eq!(
            (d.decision, d.rule.as_str()),
            (Decision::Approve, "rules[0]")
        );
        let d = p.decide_node(&subject(Level::Destructive), after);
        assert_eq!(
            (d.decision, d.rule.as_str()),
            (Decision::Deny, "effects.destructive")
        );
        let mut ro = p.clone();
        ro.env_read_only = true;
        let d = ro.decide_node(&subject(Level::Write), after);
        assert_eq!(
            (d.decision, d.rule.as_str()),
            (Decision::Deny, "INFRA_READ_ONLY")
        );
    }

    #[test]
    fn retention_has_defaults_and_its_errors_are_located() {
        let p = parse("effects: {read: allow}\n");
        let r = p.retention().expect("valid");
        assert_eq!(
            (r.max_age_days, r.max_runs, r.keep_failed_days),
            (30, 10_000, 90)
        );
        assert_eq!(p.audit_rotate_bytes(), 64 * 1024 * 1024);
        let p = parse(
            "retention: {max_age_days: 7, max_runs: 50, keep_failed_days: 7}\naudit: {rotate_bytes: 4096}\n",
        );
        let r = p.retention().expect("valid");
        assert_eq!((r.max_age_days, r.max_runs, r.keep_failed_days), (7, 50, 7));
        assert_eq!(p.audit_rotate_bytes(), 4096);
        let p = parse("retention:\n  max_age_days: 120\n");
        assert_eq!(p.errors.len(), 1);
        let shown = p.errors[0].to_string();
        assert!(
            shown.contains("keep_failed_days") && shown.contains(":2:"),
            "{shown}"
        );
        assert!(p.retention().is_none(), "a bad file prunes nothing");
        let p = parse("retention:\n  max_runs: 0\n");
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        let p = parse("retention:\n  max_days: 3\n");
        assert!(
            p.errors[0].to_string().contains("max_days"),
            "{:?}",
            p.errors
        );
    }

    #[test]
    fn a_bad_file_is_located_and_denies_writes() {
        let p = parse("effects:\n  destructive: maybe\n");
        assert_eq!(p.errors.len(), 1);
        let rendered = p.errors[0].to_string();
        assert!(rendered.contains("maybe"), "{rendered}");
        let d = p.decide_node(&subject(Level::Write), Utc::now());
        assert_eq!(
            (d.decision, d.rule.as_str()),
            (Decision::Deny, "policy_invalid")
        );
        let p = parse("freeze:\n  - {from: '2026-01-02T00:00:00Z', to: '2026-01-01T00:00:00Z'}\n");
        assert_eq!(p.errors.len(), 1);
        assert!(p.errors[0].to_string().contains("ends before it starts"));
    }
}
