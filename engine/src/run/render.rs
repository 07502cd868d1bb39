//! What templates see and make: a node's context, its `when`, `foreach` and arguments rendered, and
//! the run's outputs.
//!
//! `context` holds `input`, `run`, the results of the steps the node references (whole, never
//! redacted or cut), `state` (the persistent values overlaid by the session's) when a template reads
//! it, `item`/`index`, and `target`
//! (the public view of the step's target) when a template reads it. `prepare`
//! renders `when` (false: `node_skipped`), `foreach` and the arguments; a render error fails the
//! step before any call, with a `rejected` audit record (best effort) and its journal entry.
//! `outputs` are rendered with every result, then redacted.

use crate::error::ErrorKind;
use std::collections::HashMap;

use dsl::template::{Mode, renderer};
use serde_json::{Map, Value, json};

use super::*;
use crate::actions::ActionError;
use crate::plan::PlanNode;

/// The most persistent keys a template's `state` holds.
const STATE_VIEW_KEYS: usize = 10_000;

impl RunCx<'_> {
    /// The context templates of `node` see: inputs, run, the results of the steps it references, state.
    pub(super) fn context(
        &self,
        node: &PlanNode,
        results: &HashMap<String, Value>,
        item: Option<(&Value, usize)>,
    ) -> Value {
        let mut steps = Map::new();
        for (id, _) in node.step.refs.iter().chain(node.step.needs.iter()) {
            if let Some(r) = results.get(id.as_str()) {
                steps.insert(id.to_string(), r.clone());
            }
        }
        let mut ctx = json!({"input": self.inputs, "run": self.run_view(), "steps": steps});
        if reads(&node.step.templates, "state") {
            ctx["state"] = self.state_view();
        }
        if let Some((item, index)) = item {
            ctx["item"] = item.clone();
            ctx["index"] = index.into();
        }
        let uses_target = node.step.templates.iter().any(|t| {
            t.at != "/args/target" && t.scan.references.iter().any(|r| r.root == "target")
        });
        if uses_target && let Some(target) = self.target_of(node, &ctx) {
            ctx["target"] = target;
        }
        ctx
    }

    /// What templates see as `state`: the `any` view of `state get`, persistent values overlaid by the
    /// session's (at most `STATE_VIEW_KEYS` persistent keys).
    fn state_view(&self) -> Value {
        let mut all = Map::new();
        if let Ok(store) = self.engine.store()
            && let Ok(kept) = store.state_list("", STATE_VIEW_KEYS)
        {
            all.extend(kept);
        }
        if let Value::Object(session) = self.engine.session.snapshot() {
            all.extend(session);
        }
        Value::Object(all)
    }

    /// The public view of the target a step's `target` argument names (rendered first when it is a
    /// template): name, host, port, user, labels, auth kinds; never a credential. `None` when it
    /// names no target, and a template reading `target` then fails naming it.
    fn target_of(&self, node: &PlanNode, ctx: &Value) -> Option<Value> {
        let name = match node.step.args.get("target")? {
            Value::String(t) if dsl::template::is_template(t) => {
                match renderer().render(t, Mode::Plain, ctx).ok()? {
                    Value::String(s) => s,
                    _ => return None,
                }
            }
            Value::String(t) => t.clone(),
            _ => return None,
        };
        let targets =
            crate::targets::Targets::load_checked(&self.engine.config.profiles_dir).ok()?;
        let t = targets.find(&name, &self.engine.config.profiles_dir).ok()?;
        Some(t.public(&name))
    }

    /// Renders a node's `when`, `foreach` and arguments. `Ok(None)`: `when` is false.
    pub(super) fn prepare(
        &self,
        node: &PlanNode,
        results: &HashMap<String, Value>,
    ) -> Result<Option<Prepared>, ActionError> {
        // a node without templates renders nothing: its context is not built
        let templated = !node.step.templates.is_empty()
            || matches!(node.step.when, Some(dsl::raw::BoolOrTemplate::Template(_)))
            || matches!(
                node.step.foreach,
                Some(dsl::raw::ListOrTemplate::Template(_))
            );
        let base = if templated {
            self.context(node, results, None)
        } else {
            Value::Null
        };
        let template_err =
            |e: dsl::template::RenderError| ActionError::new(ErrorKind::Template, e.message);
        if let Some(w) = &node.step.when {
            let v = match w {
                dsl::raw::BoolOrTemplate::Bool(b) => Value::Bool(*b),
                dsl::raw::BoolOrTemplate::Template(t) => renderer()
                    .render(t, Mode::Plain, &base)
                    .map_err(template_err)?,
            };
            if !truthy(&v) {
                return Ok(None);
            }
        }
        let (items, foreach): (Vec<(Option<usize>, Value)>, bool) = match &node.step.foreach {
            None => (vec![(None, Value::Null)], false),
            Some(f) => {
                let list = match f {
                    dsl::raw::ListOrTemplate::List(l) => Value::Array(l.clone()),
                    dsl::raw::ListOrTemplate::Template(t) => renderer()
                        .render(t, Mode::Plain, &base)
                        .map_err(template_err)?,
                };
                let Value::Array(list) = list else {
                    return Err(ActionError::new(
                        ErrorKind::Template,
                        "`foreach` did not render to a list",
                    ));
                };
                (
                    list.into_iter()
                        .enumerate()
                        .map(|(i, v)| (Some(i), v))
                        .collect(),
                    true,
                )
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items {
            let args = match index {
                Some(i) if templated => {
                    render_args(node, &self.context(node, results, Some((&item, i))))?
                }
                _ => render_args(node, &base)?,
            };
            out.push((index, item, args));
        }
        Ok(Some(Prepared {
            items: out,
            foreach,
        }))
    }

    /// What templates see as `run`: `id`, `runbook`, `started_at`, and `status` (`running` until the
    /// main steps end, then how they ended), `error` and `failed_steps`.
    fn run_view(&self) -> Value {
        self.ended.get().unwrap_or(&self.run_info).clone()
    }

    /// The runbook's `outputs`, rendered with every step's result.
    pub(super) fn outputs(&self, results: &HashMap<String, Value>) -> Value {
        if self.rb.outputs.is_empty() {
            return Value::Object(Map::new());
        }
        let steps: Map<String, Value> = results
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut ctx = json!({"input": self.inputs, "run": self.run_view(), "steps": steps});
        if reads(&self.rb.output_templates, "state") {
            ctx["state"] = self.state_view();
        }
        Value::Object(
            self.rb
                .outputs
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        render_value(v, &ctx).unwrap_or_else(|e| json!({"error": e})),
                    )
                })
                .collect(),
        )
    }
}

/// Renders every template in a node's arguments.
pub(super) fn render_args(node: &PlanNode, ctx: &Value) -> Result<Map<String, Value>, ActionError> {
    let (args, failed) = node.render_args(ctx, |_| true);
    if let Some((t, why)) = failed.first() {
        return Err(ActionError::new(
            ErrorKind::Template,
            format!("`{}`: {why}", t.text),
        ));
    }
    match args {
        Value::Object(m) => Ok(m),
        _ => Err(ActionError::new(
            ErrorKind::InvalidArgs,
            "arguments must be a mapping",
        )),
    }
}

/// Renders every string of a value that is a template (outputs).
pub(super) fn render_value(v: &Value, ctx: &Value) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => renderer()
            .render(s, Mode::Plain, ctx)
            .map_err(|e| e.message)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| render_value(x, ctx).map(|r| (k.clone(), r)))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// Whether any of these templates (scanned when the runbook was loaded) reads `root`.
fn reads(templates: &[dsl::TemplateUse], root: &str) -> bool {
    templates
        .iter()
        .any(|t| t.scan.references.iter().any(|r| r.root == root))
}
