//! A plan shown with its inputs: arguments rendered where only inputs decide them, fully validated,
//! and a content digest. Nothing runs.
//!
//! Only templates whose references are all `input` or `run` are rendered; the others stay templates
//! and the node says `rendered: false`. Secret inputs are replaced by `secret_placeholder`
//! (`[secret:<name>]`) before rendering, so the rendered arguments and digest do not depend on
//! them. Each field is rendered in its mode; in `Plain` mode a string that is exactly one `{{ expr
//! }}` keeps its type. Fully rendered arguments are validated against the action schema again. Any
//! render error gets the code `undefined-variable`. The digest (`digest_of`) is the one digest of a
//! plan: `infra plan` shows it, a run records it (and writes the JSON as `plan.json`), policy and
//! approvals compare it. Credential arguments are masked in it (`mask_credentials`).

use std::borrow::Cow;

use dsl::template::Mode;
use dsl::{Code, Diagnostic, Runbook};
use serde_json::{Map, Value, json};

use super::{Plan, PlanNode, sha256_hex};
use crate::actions;

/// Template roots whose values are known before the run starts.
const KNOWN_BEFORE_RUN: &[&str] = &["input", "run"];

/// The rendered plan as data (what `infra plan --json` prints).
#[derive(Debug, Clone)]
pub struct RenderedPlan {
    pub json: Value,
    pub digest: String,
}

/// The placeholder a secret input's value is shown as.
pub fn secret_placeholder(name: &str) -> String {
    format!("[secret:{name}]")
}

impl Plan {
    /// Renders the plan with resolved inputs (see [`dsl::resolve_inputs`]). Secret inputs are shown as
    /// placeholders. Arguments that depend on other steps stay templates.
    pub fn render(&self, inputs: &Map<String, Value>) -> Result<RenderedPlan, Vec<Diagnostic>> {
        let (rendered, diags) = self.render_all(inputs);
        if diags.iter().any(Diagnostic::is_error) {
            return Err(diags);
        }
        Ok(rendered)
    }

    /// The rendered plan a run records (`plan.json`) and policy and approvals judge: the same JSON and
    /// digest as [`Plan::render`], also when a template cannot be rendered before the run (it stays a
    /// template, and the run fails at that step as it always would).
    pub fn render_for_run(&self, inputs: &Map<String, Value>) -> RenderedPlan {
        self.rendered_for_run(inputs).into_owned()
    }

    /// [`Plan::render_for_run`], borrowed where it was made before: a call's (no inputs) is made
    /// once per plan and shared by its copies.
    pub fn rendered_for_run(&self, inputs: &Map<String, Value>) -> Cow<'_, RenderedPlan> {
        if self.call && inputs.is_empty() {
            return Cow::Borrowed(self.rendered.get_or_init(|| self.render_all(inputs).0));
        }
        Cow::Owned(self.render_all(inputs).0)
    }

    fn render_all(&self, inputs: &Map<String, Value>) -> (RenderedPlan, Vec<Diagnostic>) {
        let rb = self.runbook();
        let shown = shown_inputs(rb, inputs);
        let ctx = json!({
            "input": shown,
            "run": { "id": "(at run time)", "runbook": rb.name, "started_at": "(at run time)" },
        });
        let mut diags = Vec::new();
        let nodes: Vec<Value> = self
            .nodes()
            .map(|n| {
                let mut v = self.node_json(n, n.step.args_map());
                let (args, complete) = render_args(rb, n, &ctx, &mut diags);
                // literal arguments were validated by `compile`; only rendered ones are checked again
                if complete && n.step.templates.iter().any(|t| t.at.starts_with("/args")) {
                    validate_rendered(rb, n, &args, &mut diags);
                }
                if let Some(cmd) = args.get("command").and_then(Value::as_str)
                    && (n.action.modes)(&args)
                        .iter()
                        .any(|(f, m)| *f == "command" && *m == Mode::Shell)
                {
                    v["command"] = cmd.into();
                }
                v["args"] = mask_credentials(n, args);
                v["rendered"] = complete.into();
                v
            })
            .collect();
        let mut json = json!({
            "runbook": rb.name,
            "description": rb.description,
            "source": rb.file.name(),
            "runbook_digest": rb.digest,
            "flow": rb.flow,
            "effects": self.effects(),
            "inputs": shown,
            "nodes": nodes,
        });
        let digest = digest_of(&json);
        json["digest"] = digest.clone().into();
        (RenderedPlan { json, digest }, diags)
    }
}

/// Credentials among a node's arguments (`ActionSpec::secret_args`: a connection URL's password, an
/// `Authorization` header) are masked, so neither the shown plan nor its digest holds or depends on them
/// (as secret inputs are placeholders).
fn mask_credentials(n: &PlanNode, args: Map<String, Value>) -> Value {
    let secrets = n.action.secret_args.map(|f| f(&args)).unwrap_or_default();
    if secrets.is_empty() {
        return Value::Object(args);
    }
    let r = crate::record::Redactor::new();
    for s in &secrets {
        r.add(s);
    }
    r.redact_value(&Value::Object(args))
}

/// The digest of a rendered plan: SHA-256 of its JSON without `digest` and `source` (where the runbook
/// was read from is not what it does; its content is in `runbook_digest`). `infra plan` shows it, a
/// run records it, approvals name it, and `infra approve` checks a stored plan against it.
pub fn digest_of(plan: &Value) -> String {
    use sha2::Digest;
    let Some(o) = plan.as_object() else {
        return sha256_hex(&serde_json::to_vec(plan).unwrap_or_default());
    };
    // the compact JSON of the plan without those two keys, streamed into the hash (a big plan is
    // neither copied nor held as text)
    let mut h = HashWriter(sha2::Sha256::new());
    let _ = serde_json::to_writer(&mut h, &Without(o));
    dsl::analyze::hex(&h.0.finalize())
}

/// An object without `digest` and `source`, serialized as `serde_json` writes the object itself.
struct Without<'a>(&'a Map<String, Value>);

impl serde::Serialize for Without<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0 {
            if k != "digest" && k != "source" {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

/// Bytes written are hashed.
struct HashWriter(sha2::Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn shown_inputs(rb: &Runbook, inputs: &Map<String, Value>) -> Map<String, Value> {
    inputs
        .iter()
        .map(|(k, v)| {
            let secret = rb.inputs.get(k).is_some_and(|i| i.secret);
            let v = if secret {
                Value::String(secret_placeholder(k))
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// Renders every argument template whose references are all known before the run. Returns the arguments
/// Renders every argument template whose references are all known before the run. Returns the arguments
/// and whether no template is left.
fn render_args(
    rb: &Runbook,
    n: &PlanNode,
    ctx: &Value,
    diags: &mut Vec<Diagnostic>,
) -> (Map<String, Value>, bool) {
    let known = |t: &dsl::TemplateUse| {
        t.scan
            .references
            .iter()
            .all(|r| KNOWN_BEFORE_RUN.contains(&r.root.as_str()))
    };
    let (args, failed) = n.render_args(ctx, known);
    let mut complete = n
        .step
        .templates
        .iter()
        .filter(|t| t.at.starts_with("/args"))
        .all(known);
    for (t, why) in failed {
        complete = false;
        diags.push(
            Diagnostic::error(
                Code::UndefinedVariable,
                format!("cannot render `{}`: {why}", t.text),
            )
            .at(&rb.file, t.span)
            .path(format!("{}{}", n.step.pointer, t.at)),
        );
    }
    match args {
        Value::Object(m) => (m, complete),
        _ => (Map::new(), false),
    }
}

fn validate_rendered(
    rb: &Runbook,
    n: &PlanNode,
    args: &Map<String, Value>,
    diags: &mut Vec<Diagnostic>,
) {
    let value = Value::Object(args.clone());
    let validator = actions::validator(n.action);
    if validator.is_valid(&value) {
        return;
    }
    for e in validator.iter_errors(&value) {
        let ptr = e.instance_path().as_str().to_owned();
        let span = rb
            .args_node(&n.step)
            .pointer(&ptr)
            .map_or(n.step.span, |(node, key)| node.focus(key));
        diags.push(
            Diagnostic::error(
                Code::InvalidArgs,
                format!(
                    "step `{}`: rendered arguments of `{}` are invalid: {}",
                    n.step.id,
                    n.action.qualified(),
                    e.masked()
                ),
            )
            .at(&rb.file, span)
            .path(format!("{}/args{ptr}", n.step.pointer)),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_digest_is_of_the_compact_plan_without_digest_and_source() {
        let plan = json!({
            "runbook": "r", "digest": "old", "nodes": [{"id": "a", "args": {"k": "é\n\"x\""}}],
            "source": "f.yaml", "effects": "read", "n": 1.5,
        });
        let mut v = plan.clone();
        let o = v.as_object_mut().expect("object");
        o.shift_remove("digest");
        o.shift_remove("source");
        let expected = super::sha256_hex(&serde_json::to_vec(&v).expect("json"));
        assert_eq!(super::digest_of(&plan), expected);
        assert_eq!(super::digest_of(&json!([1])), super::sha256_hex(b"[1]"));
    }
}
