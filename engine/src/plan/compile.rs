//! Compilation: a checked runbook (or one tool call) into a sealed [`Plan`].
//!
//! For every step, rollbacks included: `resolve_step` looks up the tool (name or alias) and action
//! (`unknown-tool`, `unknown-action`); `check_args` validates the arguments against the action's
//! schema (its validator compiled on first use; arguments it finds valid are not walked for
//! errors) through `dsl::schema::check_value`, skipping errors at or below a templated value;
//! `check_modes` applies the template modes (`| raw` last in a shell field: `unsafe-interpolation`
//! warning; an interpolation inside the author's quotes: `quoted-interpolation`; in a SQL field
//! anything not ending in `| ident`: `sql-interpolation`). The effect is the action's, or what
//! `ActionSpec::classify` makes of the literal arguments (templated ones count as the highest),
//! raised never lowered by the step's `effects`; `runbook.run` takes the nested plan's effect and
//! its definition digest (`nested_plan`, through `Resolve`, or an inline runbook without templates;
//! recursion or nesting past `MAX_NESTING` is `dependency-cycle`; an unknown or templated name is
//! `destructive`, with no digest). The definition digest folds the runbook's digest with those of
//! the runbooks it nests, so a parent's rendered plan, and an approval of it, binds its children's
//! text. Above a declared `effects:` ceiling: `effect-exceeds-declared`; without one the runbook's
//! effect is the highest of its nodes and rollbacks.
//!
//! `build_graph` puts nodes in runbook order (main, then `finally`); edges: with `flow: sequence`
//! each main step after the one before, every main step before the first `finally` step and
//! `finally` steps in order, `needs`, and template references to `steps.<id>`. Rollbacks hang off
//! their step and are not graph nodes. `topological_order` is Kahn's algorithm with a min-heap on
//! node index (ties go by runbook position), `None` on a cycle; only then `report_cycles` runs
//! `kosaraju_scc` and gives one `dependency-cycle` per component, with a shortest cycle path and
//! carets at the first 16 steps. Nothing recurses per step (petgraph's `tarjan_scc` and
//! `is_cyclic_directed` do). `compile_call` builds a one-step runbook (`name: call`, step `call`)
//! as JSON text and compiles it through `dsl::load`; the plans of the last 64 distinct calls that
//! resolve no nested runbook are kept and copied for the same call made again. A plan's digest is its rendered form's
//! (`Plan::render`, `digest_of`), one digest for `infra plan`, runs and approvals.

use std::collections::HashMap;
use std::sync::Arc;

use dsl::analyze::sub_span;
use dsl::template::Mode;
use dsl::{Code, Diagnostic, Effect, Flow, Phase, Runbook, Step, StepId};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value;

use super::{Plan, PlanNode};
use crate::actions::{self, ActionSpec};

/// Finds runbooks by name, for nested `runbook.run` steps.
pub trait Resolve {
    fn resolve(&self, name: &str) -> Option<Arc<Runbook>>;
}

/// How many steps of one cycle get their own caret in the rendered diagnostic.
const MAX_CYCLE_LABELS: usize = 16;

/// How deep `runbook.run` may nest.
pub use crate::actions::runbook::MAX_NESTING;

/// Options of [`compile`].
#[derive(Default)]
pub struct CompileOptions<'a> {
    /// Resolves nested runbooks; without one, a nested run's effect is taken as `destructive`.
    pub resolver: Option<&'a dyn Resolve>,
    /// Names of the runbooks being compiled around this one (to refuse recursion).
    pub stack: Vec<String>,
}

impl std::fmt::Debug for CompileOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileOptions")
            .field("resolver", &self.resolver.is_some())
            .field("stack", &self.stack)
            .finish()
    }
}

/// Compiles one checked runbook. On failure, returns every diagnostic (warnings included).
pub fn compile(rb: Arc<Runbook>, opts: &CompileOptions<'_>) -> Result<Plan, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut nodes: Vec<PlanNode> = Vec::new();
    for step in rb.all_steps() {
        let node = resolve_step(&rb, step, opts, &mut diags);
        let rollback = step
            .rollback
            .as_ref()
            .and_then(|r| resolve_step(&rb, r, opts, &mut diags).map(Box::new));
        if let Some(mut n) = node {
            n.rollback = rollback;
            nodes.push(n);
        }
    }
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }

    let mut effects = Effect::Read;
    for n in &nodes {
        effects = effects.max(n.effect);
        if let Some(r) = &n.rollback {
            effects = effects.max(r.effect);
        }
    }
    if let Some((ceiling, decl_span)) = rb.effects {
        for n in &nodes {
            for m in std::iter::once(n).chain(n.rollback.as_deref()) {
                if m.effect > ceiling {
                    diags.push(
                        Diagnostic::error(
                            Code::EffectExceedsDeclared,
                            format!(
                                "step `{}` is `{}` ({}), above the runbook's declared `{ceiling}`",
                                m.step.id,
                                m.effect,
                                m.action.qualified()
                            ),
                        )
                        .at(&rb.file, m.step.tool_span)
                        .label(format!("this step is `{}`", m.effect))
                        .secondary(decl_span, "ceiling declared here")
                        .help(format!(
                            "raise `effects:` to `{}`, or remove the step",
                            m.effect
                        )),
                    );
                }
            }
        }
    }

    let definition = definition_digest(&rb, &nodes);
    let (graph, index) = build_graph(&rb, nodes);
    let order = topological_order(&graph);
    if order.is_none() {
        report_cycles(&rb, &graph, &mut diags);
    }
    let Some(order) = order.filter(|_| !diags.iter().any(Diagnostic::is_error)) else {
        return Err(diags);
    };
    let plan = Plan {
        runbook: rb,
        graph,
        index,
        order,
        effects,
        definition,
        warnings: diags,
        call: false,
        rendered: Arc::default(),
    };
    Ok(plan)
}

/// Compiles a single tool call (one tool, one action, arguments) through the same path as a runbook: it
/// becomes a one-step runbook named after what it does (`state.get`; `call` when the action is
/// missing or malformed), then a one-node plan.
///
/// A call's plan is a function of its tool and arguments alone when nothing resolves nested
/// runbooks, so the plans of recent such calls are kept (`CallPlans`) and the same call made again
/// gets a copy of the same plan without its text being loaded again. Failed compilations are not
/// kept (their diagnostics are made again).
pub fn compile_call(
    tool: &str,
    args: &Value,
    opts: &CompileOptions<'_>,
) -> Result<Plan, Vec<Diagnostic>> {
    let key = (opts.resolver.is_none() && opts.stack.is_empty())
        .then(|| CallPlans::key(tool, args))
        .flatten();
    if let Some(k) = &key
        && let Some(plan) = CallPlans::get(k)
    {
        return Ok(plan);
    }
    let plan = compile_call_text(tool, args, opts)?;
    if let Some(k) = key {
        // rendered before it is kept, so every copy has its rendered plan
        let _ = plan.render_for_run(&serde_json::Map::new());
        CallPlans::put(k, &plan);
    }
    Ok(plan)
}

/// [`compile_call`] without the kept plans: the call as a one-step runbook's text, through
/// `dsl::load` and [`compile`].
pub fn compile_call_text(
    tool: &str,
    args: &Value,
    opts: &CompileOptions<'_>,
) -> Result<Plan, Vec<Diagnostic>> {
    let name = match args.get("action").and_then(Value::as_str) {
        Some(a)
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') =>
        {
            format!("{}.{a}", actions::canonical_tool(tool))
        }
        _ => "call".to_owned(),
    };
    let doc = serde_json::json!({
        "name": name,
        "steps": [{ "id": "call", "tool": tool, "args": args }],
    });
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    let file = dsl::SourceFile::new(format!("<call {tool}>"), text);
    let loaded = dsl::load(&file, None);
    if loaded.has_errors() {
        return Err(loaded.diagnostics);
    }
    let rb = loaded.runbooks.into_iter().next().ok_or_else(Vec::new)?;
    let mut plan = compile(Arc::new(rb), opts)?;
    plan.call = true;
    Ok(plan)
}

/// The plans of the last [`CallPlans::KEEP`] distinct calls, by tool and arguments (their compact
/// JSON), oldest dropped first. Calls whose arguments are longer than [`CallPlans::MAX_KEY`] bytes
/// are not kept.
struct CallPlans {
    plans: HashMap<String, Plan>,
    order: std::collections::VecDeque<String>,
}

impl CallPlans {
    const KEEP: usize = 64;
    const MAX_KEY: usize = 4096;

    fn kept() -> &'static std::sync::Mutex<CallPlans> {
        static KEPT: std::sync::OnceLock<std::sync::Mutex<CallPlans>> = std::sync::OnceLock::new();
        KEPT.get_or_init(|| {
            std::sync::Mutex::new(CallPlans {
                plans: HashMap::new(),
                order: std::collections::VecDeque::new(),
            })
        })
    }

    fn key(tool: &str, args: &Value) -> Option<String> {
        let mut key = String::with_capacity(64);
        key.push_str(tool);
        key.push('\0');
        key.push_str(&serde_json::to_string(args).ok()?);
        (key.len() <= Self::MAX_KEY).then_some(key)
    }

    fn get(key: &str) -> Option<Plan> {
        let kept = Self::kept()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.plans.get(key).cloned()
    }

    fn put(key: String, plan: &Plan) {
        let mut kept = Self::kept()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.plans.contains_key(&key) {
            return;
        }
        if kept.order.len() >= Self::KEEP
            && let Some(old) = kept.order.pop_front()
        {
            kept.plans.remove(&old);
        }
        kept.order.push_back(key.clone());
        kept.plans.insert(key, plan.clone());
    }
}

fn resolve_step(
    rb: &Runbook,
    step: &Arc<Step>,
    opts: &CompileOptions<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<PlanNode> {
    let file = &rb.file;
    let Some(tool) = actions::find_tool(&step.tool) else {
        let names = actions::tool_names();
        let canonical = actions::canonical_tool(&step.tool);
        let msg = if canonical != step.tool {
            format!(
                "tool `{}` (`{canonical}`) is not available in this build",
                step.tool
            )
        } else {
            format!("unknown tool `{}`", step.tool)
        };
        let help =
            dsl::diagnostic::suggestion(&step.tool, names.iter().copied()).unwrap_or_else(|| {
                let mut own: Vec<&str> = actions::registry().iter().map(|t| t.name).collect();
                own.sort_unstable();
                format!("available tools: {}", own.join(", "))
            });
        diags.push(
            Diagnostic::error(Code::UnknownTool, msg)
                .at(file, step.tool_span)
                .path(format!("{}/tool", step.pointer))
                .help(help),
        );
        return None;
    };
    let Some(action) = tool.actions.iter().find(|a| a.name == step.action) else {
        let names: Vec<&str> = tool.actions.iter().map(|a| a.name).collect();
        let help = dsl::diagnostic::suggestion(&step.action, names.iter().copied())
            .unwrap_or_else(|| format!("`{}` has actions: {}", tool.name, names.join(", ")));
        diags.push(
            Diagnostic::error(
                Code::UnknownAction,
                format!("tool `{}` has no action `{}`", tool.name, step.action),
            )
            .at(file, step.action_span)
            .path(format!("{}/args/action", step.pointer))
            .help(help),
        );
        return None;
    };

    check_args(rb, step, action, diags);
    check_modes(rb, step, action, diags);

    let mut effect = match (action.classify, step.args.as_object()) {
        (Some(_), Some(args)) => {
            // what the literal arguments say; a templated value is unknown (`null`) until it is
            // rendered, and only that value: a literal beside it (a pipeline's `to.type`) still counts
            let mut literal = Value::Object(args.clone());
            for p in templated_pointers(step) {
                if let Some(v) = literal.pointer_mut(p) {
                    *v = Value::Null;
                }
            }
            match &literal {
                Value::Object(m) => action.effect_of(m),
                _ => action.effect,
            }
        }
        _ => action.effect,
    };
    let mut nested = None;
    if action.tool == "runbook" && action.name == "run" {
        (effect, nested) = nested_plan(rb, step, opts, diags);
    }
    if let Some(raised) = step.effects {
        effect = effect.max(raised);
    }
    Some(PlanNode {
        step: Arc::clone(step),
        action,
        effect,
        rollback: None,
        nested,
    })
}

/// Pointers (relative to `args`) of argument values that are templates.
fn templated_pointers(step: &Step) -> Vec<&str> {
    step.templates
        .iter()
        .filter_map(|t| t.at.strip_prefix("/args"))
        .collect()
}

fn check_args(rb: &Runbook, step: &Step, action: &ActionSpec, diags: &mut Vec<Diagnostic>) {
    let validator = actions::validator(action);
    // valid arguments (most) have no error to find, locate or filter
    if validator.is_valid(&step.args) {
        return;
    }
    let templated = templated_pointers(step);
    let base = format!("{}/args", step.pointer);
    let found = dsl::schema::check_value(
        &rb.file,
        rb.args_node(step),
        &step.args,
        &base,
        validator,
        action.schema(),
        Code::InvalidArgs,
    );
    for mut d in found {
        let rel = d
            .path
            .as_deref()
            .and_then(|p| p.strip_prefix(&base))
            .unwrap_or("");
        let under_template = templated
            .iter()
            .any(|t| rel == *t || rel.starts_with(&format!("{t}/")));
        if under_template {
            continue;
        }
        if matches!(
            d.code,
            Code::UnknownKey | Code::MissingKey | Code::SchemaViolation
        ) {
            d.message = format!("{} (arguments of `{}`)", d.message, action.qualified());
            if d.code == Code::SchemaViolation {
                d.code = Code::InvalidArgs;
            }
        }
        diags.push(d);
    }
}

fn check_modes(rb: &Runbook, step: &Step, action: &ActionSpec, diags: &mut Vec<Diagnostic>) {
    let modes = (action.modes)(step.args_map());
    if modes.is_empty() {
        return;
    }
    for t in &step.templates {
        let Some(field) = t.at.strip_prefix("/args/") else {
            continue;
        };
        let Some(&(_, mode)) = modes.iter().find(|(f, _)| *f == field) else {
            continue;
        };
        if mode == Mode::Shell {
            for (start, end, place) in dsl::template::quoted_interpolations_of(&t.text, &t.scan) {
                let span = sub_span(rb.file.text(), t.span, &t.text, start, end);
                diags.push(
                    Diagnostic::error(
                        Code::QuotedInterpolation,
                        format!("a value is interpolated {place} in the shell command of `{field}`"),
                    )
                    .at(&rb.file, span)
                    .label(format!("{place}: the quotes infra adds would not hold here"))
                    .help("remove the quotes around it: values are quoted for you (or write `| raw` for a value meant to be code)"),
                );
            }
        }
        for i in &t.scan.interpolations {
            let span = sub_span(rb.file.text(), t.span, &t.text, i.start, i.end);
            let last = i.last_filter.as_deref();
            match (mode, last) {
                (_, Some("raw")) => diags.push(
                    Diagnostic::warning(
                        Code::UnsafeInterpolation,
                        format!("`| raw` writes this value into `{field}` unquoted"),
                    )
                    .at(&rb.file, span)
                    .label("not quoted")
                    .help("remove `| raw` unless the value is meant to be code; a hostile value can inject commands"),
                ),
                (Mode::Sql, Some("ident")) => {}
                (Mode::Sql, _) => diags.push(
                    Diagnostic::error(
                        Code::SqlInterpolation,
                        format!("a value is interpolated into the SQL text of `{field}`"),
                    )
                    .at(&rb.file, span)
                    .label("interpolated into SQL")
                    .help("pass the value in `params` and write `$1`; quote an identifier with `| ident`"),
                ),
                _ => {}
            }
        }
    }
}

/// [`Plan::definition_digest`]: the runbook's digest, folded with the nested plans' in node order.
fn definition_digest(rb: &Runbook, nodes: &[PlanNode]) -> String {
    let nested: Vec<&str> = nodes
        .iter()
        .flat_map(|n| std::iter::once(n).chain(n.rollback.as_deref()))
        .filter_map(|n| n.nested.as_deref())
        .collect();
    if nested.is_empty() {
        return rb.digest.clone();
    }
    super::sha256_hex(format!("{}\n{}", rb.digest, nested.join("\n")).as_bytes())
}

/// The name an inline runbook without one of its own takes.
pub const INLINE_NAME: &str = "inline";

/// What a `runbook.run` step nests: the nested plan's effect and definition digest. A runbook known
/// only when it runs (a templated name, an inline runbook with templates in it), an unknown name,
/// recursion, or a nested runbook that does not compile is `destructive`, with no digest.
fn nested_plan(
    rb: &Runbook,
    step: &Step,
    opts: &CompileOptions<'_>,
    diags: &mut Vec<Diagnostic>,
) -> (Effect, Option<String>) {
    const UNKNOWN: (Effect, Option<String>) = (Effect::Destructive, None);
    let name = match (step.args.get("name"), step.args.get("runbook")) {
        (Some(Value::String(n)), None) if !dsl::template::is_template(n) => Some(n.clone()),
        (None, Some(Value::Object(_)))
            if !step
                .templates
                .iter()
                .any(|t| t.at.starts_with("/args/runbook")) =>
        {
            None
        }
        _ => return UNKNOWN,
    };
    let Some(resolver) = opts.resolver else {
        return UNKNOWN;
    };
    let span = rb
        .args_node(step)
        .get(if name.is_some() { "name" } else { "runbook" })
        .map_or(step.action_span, |n| n.span);
    let nested = match &name {
        Some(name) => resolver.resolve(name),
        // an inline runbook that does not load fails when it runs, as it always has
        None => match dsl::load_value(&step.args["runbook"], INLINE_NAME) {
            Ok(r) => Some(Arc::new(r)),
            Err(_) => return UNKNOWN,
        },
    };
    let shown = name.clone().unwrap_or_else(|| {
        nested
            .as_ref()
            .map_or(INLINE_NAME.to_owned(), |n| n.name.clone())
    });
    // an inline runbook's text is its own, whatever name it has: it cannot run itself
    if name.is_some() && (shown == rb.name || opts.stack.contains(&shown)) {
        diags.push(
            Diagnostic::error(
                Code::DependencyCycle,
                format!("runbook `{shown}` runs itself"),
            )
            .at(&rb.file, span)
            .help(format!(
                "the chain is {} → {shown}",
                [opts.stack.as_slice(), std::slice::from_ref(&rb.name)]
                    .concat()
                    .join(" → ")
            )),
        );
        return UNKNOWN;
    }
    if opts.stack.len() >= MAX_NESTING {
        diags.push(
            Diagnostic::error(
                Code::DependencyCycle,
                format!("runbooks nest deeper than {MAX_NESTING}"),
            )
            .at(&rb.file, span),
        );
        return UNKNOWN;
    }
    let Some(nested) = nested else {
        diags.push(
            Diagnostic::error(
                Code::UnknownRunbook,
                format!("there is no runbook `{shown}`"),
            )
            .at(&rb.file, span)
            .help("`infra list` shows the runbooks there are"),
        );
        return UNKNOWN;
    };
    let mut stack = opts.stack.clone();
    stack.push(rb.name.clone());
    let inner = CompileOptions {
        resolver: opts.resolver,
        stack,
    };
    match compile(nested, &inner) {
        Ok(p) => (p.effects(), Some(p.definition)),
        // as one that does not load
        Err(_) if name.is_none() => UNKNOWN,
        Err(_) => {
            diags.push(
                Diagnostic::error(
                    Code::UnknownRunbook,
                    format!("runbook `{shown}` does not compile"),
                )
                .at(&rb.file, span)
                .help(format!("run `infra validate {shown}`")),
            );
            UNKNOWN
        }
    }
}

/// The graph and the index of its nodes by step id.
fn build_graph(
    rb: &Runbook,
    nodes: Vec<PlanNode>,
) -> (DiGraph<PlanNode, ()>, HashMap<StepId, NodeIndex>) {
    let mut g: DiGraph<PlanNode, ()> = DiGraph::with_capacity(nodes.len(), nodes.len() * 2);
    let mut index: HashMap<StepId, NodeIndex> = HashMap::with_capacity(nodes.len());
    let mut main = Vec::new();
    let mut fin = Vec::new();
    for n in nodes {
        let phase = n.step.phase;
        let id = n.step.id.clone();
        let ix = g.add_node(n);
        index.insert(id, ix);
        if phase == Phase::Finally {
            fin.push(ix)
        } else {
            main.push(ix)
        }
    }
    if rb.flow == Flow::Sequence {
        for w in main.windows(2) {
            g.update_edge(w[0], w[1], ());
        }
    }
    if let Some(&first) = fin.first() {
        for &m in &main {
            g.update_edge(m, first, ());
        }
    }
    for w in fin.windows(2) {
        g.update_edge(w[0], w[1], ());
    }
    let mut deps: Vec<NodeIndex> = Vec::new();
    for ix in g.node_indices() {
        let s = &g[ix].step;
        deps.clear();
        deps.extend(
            s.needs
                .iter()
                .chain(s.refs.iter())
                .filter_map(|(id, _)| index.get(id).copied()),
        );
        for &from in &deps {
            g.update_edge(from, ix, ());
        }
    }
    (g, index)
}

/// Reports every cycle, naming all the steps of each strongly connected component. Kosaraju's algorithm is
/// iterative in petgraph (Tarjan's recurses), so a long chain cannot exhaust the stack.
fn report_cycles(rb: &Runbook, g: &DiGraph<PlanNode, ()>, diags: &mut Vec<Diagnostic>) {
    let before = diags.len();
    for mut scc in petgraph::algo::kosaraju_scc(g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        scc.sort();
        let start = scc[0];
        let path = cycle_path(g, &scc, start);
        let names: Vec<String> = scc.iter().map(|&i| format!("`{}`", g[i].step.id)).collect();
        let arrow: Vec<&str> = path.iter().map(|&i| g[i].step.id.as_str()).collect();
        let mut d = Diagnostic::error(
            Code::DependencyCycle,
            format!(
                "dependency cycle between {}: {} → {}",
                names.join(", "),
                arrow.join(" → "),
                g[start].step.id
            ),
        )
        .at(&rb.file, g[start].step.span)
        .label("this step is part of the cycle");
        // the message names every step; carets mark the first few
        for &i in scc.iter().skip(1).take(MAX_CYCLE_LABELS) {
            d = d.secondary(
                g[i].step.span,
                format!("`{}` is part of the cycle", g[i].step.id),
            );
        }
        let help = if rb.flow == Flow::Sequence {
            "in `flow: sequence` each step also runs after the one before it; reference only earlier steps, or use `flow: dag`"
        } else {
            "remove one of the `needs` or `steps.*` references that close the cycle"
        };
        diags.push(d.help(help));
    }
    if diags.len() == before {
        diags.push(
            Diagnostic::error(Code::DependencyCycle, "the plan has a dependency cycle")
                .in_file(&rb.file),
        );
    }
}

/// Kahn's algorithm, ties broken by position in the runbook (node indices follow it). `None` on a cycle.
fn topological_order(g: &DiGraph<PlanNode, ()>) -> Option<Vec<NodeIndex>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut indegree: Vec<usize> = vec![0; g.node_count()];
    for e in g.raw_edges() {
        indegree[e.target().index()] += 1;
    }
    let mut ready: BinaryHeap<Reverse<NodeIndex>> = g
        .node_indices()
        .filter(|i| indegree[i.index()] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(g.node_count());
    while let Some(Reverse(n)) = ready.pop() {
        order.push(n);
        for m in g.neighbors(n) {
            indegree[m.index()] -= 1;
            if indegree[m.index()] == 0 {
                ready.push(Reverse(m));
            }
        }
    }
    (order.len() == g.node_count()).then_some(order)
}

/// A shortest cycle through `start` inside one strongly connected component.
fn cycle_path(g: &DiGraph<PlanNode, ()>, scc: &[NodeIndex], start: NodeIndex) -> Vec<NodeIndex> {
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for m in g.neighbors(n) {
            if m == start {
                let mut path = vec![n];
                let mut cur = n;
                while let Some(&p) = prev.get(&cur) {
                    path.push(p);
                    cur = p;
                }
                if *path.last().unwrap_or(&start) != start {
                    path.push(start);
                }
                path.reverse();
                path.dedup();
                return path;
            }
            if scc.binary_search(&m).is_ok() && !prev.contains_key(&m) && m != start {
                prev.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    vec![start]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::find_action;

    fn sql_modes(_: &serde_json::Map<String, Value>) -> Vec<(&'static str, Mode)> {
        vec![("sql", Mode::Sql), ("command", Mode::Shell)]
    }

    /// A stand-in action whose `sql` field is SQL text (no SQL action is registered in this build).
    fn fake_sql_action() -> ActionSpec {
        let base = find_action("state", "set").expect("state.set");
        ActionSpec {
            modes: sql_modes,
            classify: None,
            secret_args: None,
            ..clone_spec(base)
        }
    }

    fn clone_spec(a: &ActionSpec) -> ActionSpec {
        ActionSpec {
            tool: a.tool,
            name: a.name,
            title: a.title,
            description: a.description,
            effect: a.effect,
            unsafe_local: a.unsafe_local,
            schema_fn: a.schema_fn,
            modes: a.modes,
            classify: None,
            secret_args: None,
            example: a.example,
        }
    }

    fn step_diags(text: &str) -> Vec<Diagnostic> {
        let file = dsl::SourceFile::new("t.yaml", text);
        let loaded = dsl::load(&file, None);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let rb = &loaded.runbooks[0];
        let mut diags = Vec::new();
        check_modes(rb, &rb.steps[0], &fake_sql_action(), &mut diags);
        diags
    }

    #[test]
    fn values_interpolated_into_sql_text_are_errors() {
        let d = step_diags(
            "name: q\ninputs: [t, v]\nsteps:\n  - id: a\n    tool: state\n    args: { action: set, key: k, value: 1, sql: \"select * from {{ input.t | ident }} where x = '{{ input.v }}'\" }\n",
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, Code::SqlInterpolation);
        assert!(d[0].is_error());
        assert_eq!(d[0].location().as_deref(), Some("t.yaml:6:97"));
    }

    #[test]
    fn raw_draws_an_unsafe_interpolation_warning_in_sql_and_shell() {
        let d = step_diags(
            "name: q\ninputs: [t]\nsteps:\n  - id: a\n    tool: state\n    args: { action: set, key: k, value: 1, sql: \"select {{ input.t | raw }}\", command: \"ls {{ input.t | raw }} {{ input.t }}\" }\n",
        );
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d.iter()
                .all(|d| d.code == Code::UnsafeInterpolation && !d.is_error())
        );
    }
}

#[cfg(test)]
mod call_tests {
    use super::*;

    /// What a call's plan is to a run: its data, its rendered form and digest, its effect, its warnings.
    fn seen(p: &Plan) -> (Value, Value, String, Effect, Vec<String>, bool) {
        let r = p.render_for_run(&serde_json::Map::new());
        let uncached = p.render(&serde_json::Map::new()).map(|r| r.digest);
        if let Ok(d) = &uncached {
            assert_eq!(&r.digest, d, "the kept render is the render");
        }
        (
            p.to_json(),
            r.json,
            r.digest,
            p.effects(),
            p.warnings().iter().map(ToString::to_string).collect(),
            p.is_call(),
        )
    }

    #[test]
    fn a_kept_call_plan_is_the_plan_the_text_compiles_to() {
        let opts = CompileOptions::default();
        let mut calls: Vec<(&str, Value)> = actions::all_actions()
            .map(|a| (a.tool, (a.example)()))
            .collect();
        calls.extend([
            (
                "mcp_state",
                serde_json::json!({"action": "get", "key": "k"}),
            ),
            (
                "state",
                serde_json::json!({"action": "get", "key": "{{ run.id }}"}),
            ),
            (
                "local",
                serde_json::json!({"action": "exec", "command": "echo {{ run.id | raw }}"}),
            ),
            (
                "state",
                serde_json::json!({"action": "set", "key": "k", "value": {"a": [1, 2.5, null]}}),
            ),
        ]);
        for (tool, args) in &calls {
            let text = compile_call_text(tool, args, &opts)
                .unwrap_or_else(|d| panic!("{tool} {args}: {d:?}"));
            let first = compile_call(tool, args, &opts).expect("compiles");
            let again = compile_call(tool, args, &opts).expect("compiles again");
            assert_eq!(seen(&first), seen(&text), "{tool} {args}");
            assert_eq!(seen(&again), seen(&text), "{tool} {args}, kept");
        }
    }

    #[test]
    fn a_call_that_does_not_compile_is_not_kept_and_says_the_same_each_time() {
        let opts = CompileOptions::default();
        let args = serde_json::json!({"action": "set", "value": 1});
        let text = compile_call_text("state", &args, &opts).expect_err("no key");
        for _ in 0..2 {
            let d = compile_call("state", &args, &opts).expect_err("no key");
            assert_eq!(
                d.iter().map(ToString::to_string).collect::<Vec<_>>(),
                text.iter().map(ToString::to_string).collect::<Vec<_>>()
            );
        }
        let key = CallPlans::key("state", &args).expect("key");
        assert!(CallPlans::get(&key).is_none());
    }

    #[test]
    fn only_recent_calls_are_kept() {
        let opts = CompileOptions::default();
        let first = serde_json::json!({"action": "get", "key": "kept-first"});
        compile_call("state", &first, &opts).expect("compiles");
        for i in 0..CallPlans::KEEP + 8 {
            let args = serde_json::json!({"action": "get", "key": format!("kept-{i}")});
            compile_call("state", &args, &opts).expect("compiles");
        }
        let key = CallPlans::key("state", &first).expect("key");
        assert!(CallPlans::get(&key).is_none(), "the oldest call was let go");
        let big = serde_json::json!({"action": "get", "key": "x".repeat(CallPlans::MAX_KEY)});
        assert!(
            CallPlans::key("state", &big).is_none(),
            "long arguments are not kept"
        );
    }
}
