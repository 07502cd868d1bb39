//! Plans: a checked runbook compiled into a sealed petgraph DAG of nodes, each one action call.
//!
//! A [`Plan`] is only made by [`compile`](compile::compile), which refuses cycles, unknown tools and actions,
//! invalid arguments and effects above the declared ceiling; once built it cannot be changed.

pub mod compile;
mod render;

use std::collections::HashMap;
use std::sync::Arc;

use dsl::{Effect, Phase, Runbook, Step, StepId};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Value, json};

use crate::actions::ActionSpec;

pub use compile::{CompileOptions, Resolve, compile, compile_call};
pub use render::{RenderedPlan, digest_of};

/// One node of a plan: one step, resolved to its action.
#[derive(Debug, Clone)]
pub struct PlanNode {
    pub step: Arc<Step>,
    pub action: &'static ActionSpec,
    /// The step's effect: the action's, raised by the step's `effects`.
    pub effect: Effect,
    /// Its rollback step, resolved.
    pub rollback: Option<Box<PlanNode>>,
    /// For `runbook.run` of a runbook known when compiled: the nested plan's
    /// [`definition digest`](Plan::definition_digest), which the rendered plan (so its digest and an
    /// approval of it) carries.
    pub nested: Option<String>,
}

impl PlanNode {
    pub fn id(&self) -> &StepId {
        &self.step.id
    }

    pub fn phase(&self) -> Phase {
        self.step.phase
    }

    /// Renders the argument templates `select` accepts, each in the mode of its field (shell-quoted,
    /// SQL-checked, or typed). Returns the arguments and each template that failed, with why.
    pub fn render_args<'n>(
        &'n self,
        ctx: &Value,
        select: impl Fn(&dsl::TemplateUse) -> bool,
    ) -> (Value, Vec<(&'n dsl::TemplateUse, String)>) {
        use dsl::template::{Mode, renderer};
        let mut args = self.step.args.clone();
        if self.step.templates.is_empty() {
            return (args, Vec::new());
        }
        let modes = (self.action.modes)(self.step.args_map());
        let mut failed = Vec::new();
        for t in &self.step.templates {
            let Some(ptr) = t.at.strip_prefix("/args") else {
                continue;
            };
            if !select(t) {
                continue;
            }
            let field = ptr.trim_start_matches('/');
            let mode = modes
                .iter()
                .find(|(f, _)| *f == field)
                .map_or(Mode::Plain, |(_, m)| *m);
            match renderer().render(&t.text, mode, ctx) {
                Ok(v) => {
                    if let Some(slot) = args.pointer_mut(ptr) {
                        *slot = v;
                    }
                }
                Err(e) => failed.push((t, e.message)),
            }
        }
        (args, failed)
    }
}

/// A sealed, acyclic plan.
#[derive(Debug, Clone)]
pub struct Plan {
    runbook: Arc<Runbook>,
    graph: DiGraph<PlanNode, ()>,
    /// Step id to node.
    index: HashMap<StepId, NodeIndex>,
    /// Topological order (ties broken by position in the runbook).
    order: Vec<NodeIndex>,
    effects: Effect,
    /// The runbook's digest, folded with the definition digests of the runbooks it nests.
    definition: String,
    warnings: Vec<dsl::Diagnostic>,
    /// Made by `compile_call`: one action called on its own, not a runbook.
    call: bool,
    /// A call's rendered plan, made once (`Plan::render_for_run`: a call has no inputs, so it is
    /// the same every time) and shared by the plan's copies.
    rendered: Arc<std::sync::OnceLock<RenderedPlan>>,
}

impl Plan {
    pub fn runbook(&self) -> &Arc<Runbook> {
        &self.runbook
    }

    /// Nodes in execution (topological) order.
    pub fn nodes(&self) -> impl Iterator<Item = &PlanNode> {
        self.order.iter().map(|&i| &self.graph[i])
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    pub fn node(&self, id: &StepId) -> Option<&PlanNode> {
        self.index.get(id).map(|&i| &self.graph[i])
    }

    /// The steps a node runs after, in runbook order.
    pub fn dependencies(&self, id: &StepId) -> Vec<&StepId> {
        let Some(&ix) = self.index.get(id) else {
            return Vec::new();
        };
        let mut deps: Vec<NodeIndex> = self
            .graph
            .neighbors_directed(ix, petgraph::Direction::Incoming)
            .collect();
        deps.sort();
        deps.into_iter().map(|d| &self.graph[d].step.id).collect()
    }

    /// Whether this is a single call (`compile_call`) rather than a runbook's plan. A call's records go
    /// to its process's calls journal, and it has a directory only if it writes an artifact.
    pub fn is_call(&self) -> bool {
        self.call
    }

    /// The highest effect of any node (rollbacks included).
    pub fn effects(&self) -> Effect {
        self.effects
    }

    /// What the plan would run, as text: the runbook's digest when it nests no runbook, else SHA-256 of
    /// it and the definition digests of the runbooks its nodes and rollbacks nest, in order. A nested
    /// run is covered by its parent's approval only when its plan has a definition digest the parent's
    /// approved plan carried (`Engine::gate`).
    pub fn definition_digest(&self) -> &str {
        &self.definition
    }

    /// The definition digests of the runbooks this plan's nodes and rollbacks nest (known when compiled).
    pub fn nested_digests(&self) -> Vec<String> {
        self.graph
            .node_weights()
            .flat_map(|n| std::iter::once(n).chain(n.rollback.as_deref()))
            .filter_map(|n| n.nested.clone())
            .collect()
    }

    /// Warnings found while compiling (e.g. `unsafe-interpolation`).
    pub fn warnings(&self) -> &[dsl::Diagnostic] {
        &self.warnings
    }

    /// The plan as data: nodes in order with their dependencies, actions, effects and arguments as written.
    pub fn to_json(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes()
            .map(|n| self.node_json(n, n.step.args_map()))
            .collect();
        json!({
            "runbook": self.runbook.name,
            "runbook_digest": self.runbook.digest,
            "source": self.runbook.file.name(),
            "flow": self.runbook.flow,
            "effects": self.effects,
            "nodes": nodes,
        })
    }

    fn node_json(&self, n: &PlanNode, args: &serde_json::Map<String, Value>) -> Value {
        let deps: Vec<&str> = self
            .dependencies(&n.step.id)
            .into_iter()
            .map(StepId::as_str)
            .collect();
        let mut v = json!({
            "id": n.step.id,
            "phase": n.step.phase,
            "tool": n.action.tool,
            "action": n.action.name,
            "effect": n.effect,
            "needs": deps,
            "args": args,
        });
        if let Some(d) = &n.nested {
            v["nested_digest"] = d.as_str().into();
        }
        let s = &n.step;
        if let Some(w) = &s.when {
            v["when"] = serde_json::to_value(w).unwrap_or(Value::Null);
        }
        if let Some(f) = &s.foreach {
            v["foreach"] = serde_json::to_value(f).unwrap_or(Value::Null);
        }
        if let Some(r) = &s.retry {
            v["retry"] = serde_json::to_value(r).unwrap_or(Value::Null);
        }
        if let Some(t) = s.timeout_ms {
            v["timeout_ms"] = t.into();
        }
        if s.continue_on_error {
            v["continue_on_error"] = true.into();
        }
        if let Some(rb) = &n.rollback {
            v["rollback"] = json!({
                "id": rb.step.id,
                "tool": rb.action.tool,
                "action": rb.action.name,
                "effect": rb.effect,
                "args": rb.step.args,
            });
            if let Some(d) = &rb.nested {
                v["rollback"]["nested_digest"] = d.as_str().into();
            }
        }
        v
    }

    /// A Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        let ids: HashMap<NodeIndex, usize> = self
            .order
            .iter()
            .enumerate()
            .map(|(i, &ix)| (ix, i))
            .collect();
        for (i, &ix) in self.order.iter().enumerate() {
            let n = &self.graph[ix];
            let shape = match n.step.phase {
                Phase::Finally => ("([", "])"),
                _ => ("[", "]"),
            };
            out.push_str(&format!(
                "  n{i}{}\"{}<br/>{}.{} · {}\"{}\n",
                shape.0,
                mermaid_escape(n.step.id.as_str()),
                n.action.tool,
                n.action.name,
                n.effect,
                shape.1
            ));
        }
        for e in self.graph.edge_indices() {
            if let Some((a, b)) = self.graph.edge_endpoints(e) {
                out.push_str(&format!("  n{} --> n{}\n", ids[&a], ids[&b]));
            }
        }
        out
    }

    /// A Graphviz digraph.
    pub fn to_dot(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = format!(
            "digraph {} {{\n  rankdir=TB;\n  node [shape=box];\n",
            q(&self.runbook.name)
        );
        for n in self.nodes() {
            let label = format!(
                "{}\\n{}.{} ({})",
                n.step.id, n.action.tool, n.action.name, n.effect
            );
            let style = if n.step.phase == Phase::Finally {
                ", style=rounded"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {} [label=\"{}\"{}];\n",
                q(n.step.id.as_str()),
                label.replace('"', "\\\""),
                style
            ));
        }
        for e in self.graph.edge_indices() {
            if let Some((a, b)) = self.graph.edge_endpoints(e) {
                out.push_str(&format!(
                    "  {} -> {};\n",
                    q(self.graph[a].step.id.as_str()),
                    q(self.graph[b].step.id.as_str())
                ));
            }
        }
        out.push_str("}\n");
        out
    }
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;")
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    dsl::analyze::hex(&Sha256::digest(bytes))
}
