//! Analysis: ids, `needs`, inputs and template references of a runbook whose shape is valid.
//!
//! Checks the name pattern; inputs (the list form means required strings; each spec's constraints
//! must compile as a schema and its default fit); step ids unique across `steps`, `finally` and
//! rollbacks (a rollback's id defaults to `<step>-rollback`); `needs`; and every template in
//! `args`, `when`, `foreach`, `retry.until` and `outputs`. Each template is scanned
//! (`template::scan`) and syntax-checked by Tera (`Renderer::check`) unless every block is a plain
//! path with no-argument filters (`Scan::simple`), which the scanner has checked completely. A
//! reference's root must be `input`, `steps`, `state`, `run` or `target` (plus `item`/`index` under
//! `foreach`, `result` in `retry.until`): `undefined-variable`; `input.<name>` must be declared:
//! `undefined-input`; `steps.<id>` and `needs` must name a step: `unknown-step` (from a template it
//! points at the whole string). Produces a `Runbook` only when there are no errors, so a shape
//! error hides analysis errors. Also the runbook digest and `sub_span` (a byte range inside a
//! template string to a span in the file).
//!
//! From 2,048 main steps the second half is analyzed on a scoped thread with its own context
//! (`Cx::half`); its ids are declared after the first half's, in order (`Cx::absorb`), so every
//! `duplicate-step-id` is the one a single pass makes, and diagnostics are sorted by place later.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::diagnostic::{Code, Diagnostic, suggestion};
use crate::parse::Node;
use crate::raw::{
    BoolOrTemplate, InputType, ListOrTemplate, NAME_PATTERN, RawArgs, RawInputs, RawRollback,
    RawRunbook, RawStep,
};
use crate::runbook::{Input, Phase, Runbook, Step, StepId, TemplateUse};
use crate::source::{SourceFile, Span};
use crate::template::{self, is_template, scan};

static NULL_NODE: Node = Node {
    span: Span { start: 0, end: 0 },
    value: crate::parse::NodeValue::Null,
};

/// Template variables every template may read (`target` too, in a step with a `target` argument).
const ROOTS: &[&str] = &["input", "steps", "state", "run"];

/// Where a runbook was found in its file.
#[derive(Debug)]
pub struct Located<'a> {
    pub file: &'a SourceFile,
    /// The whole file's tree (kept by the runbook to locate later errors).
    pub root: Arc<Node>,
    /// This runbook's node in it.
    pub node: &'a Node,
    pub pointer: &'a str,
    pub name: String,
    pub name_span: Span,
}

/// Analyzes one runbook of valid shape. Returns it when there are no errors, and every diagnostic found.
pub fn analyze(at: &Located<'_>, raw: RawRunbook) -> (Option<Runbook>, Vec<Diagnostic>) {
    analyze_split(at, raw, SPLIT_STEPS)
}

/// [`analyze`], the main steps in two halves at once from `split` steps.
fn analyze_split(
    at: &Located<'_>,
    raw: RawRunbook,
    split: usize,
) -> (Option<Runbook>, Vec<Diagnostic>) {
    let mut cx = Cx {
        file: at.file,
        diags: Vec::new(),
        inputs: IndexMap::new(),
        ids: HashMap::new(),
        input_help: HashMap::new(),
        deferred: None,
    };
    if !valid_name(&at.name) {
        cx.diags.push(
            Diagnostic::error(
                Code::SchemaViolation,
                format!("`{}` is not a valid runbook name", at.name),
            )
            .at(at.file, at.name_span)
            .help(format!("runbook names match `{NAME_PATTERN}`")),
        );
    }
    cx.inputs(at.node.get("inputs"), raw.inputs.as_ref());

    let steps_node = at.node.get("steps");
    let main = |cx: &mut Cx<'_>, range: std::ops::Range<usize>| -> Vec<Arc<Step>> {
        range
            .map(|i| {
                let node = steps_node.and_then(|n| n.items().get(i));
                let pointer = format!("{}/steps/{i}", at.pointer);
                Arc::new(cx.step(&raw.steps[i], node, pointer, Phase::Main))
            })
            .collect()
    };
    let n = raw.steps.len();
    let steps = if n < split {
        main(&mut cx, 0..n)
    } else {
        // the second half on a scoped thread, its ids declared here after the first half's
        let mid = n / 2;
        let mut half = cx.half();
        let main = &main;
        let (mut first, second) = std::thread::scope(|s| {
            let second = s.spawn(move || (main(&mut half, mid..n), half));
            (main(&mut cx, 0..mid), second.join())
        });
        let (second, half) = second.unwrap_or_else(|p| std::panic::resume_unwind(p));
        cx.absorb(half);
        first.extend(second);
        first
    };
    let mut finally = Vec::new();
    let fin_node = at.node.get("finally");
    for (i, s) in raw.finally.iter().enumerate() {
        let node = fin_node.and_then(|n| n.items().get(i));
        finally.push(Arc::new(cx.step(
            s,
            node,
            format!("{}/finally/{i}", at.pointer),
            Phase::Finally,
        )));
    }
    cx.check_step_refs(steps.iter().chain(&finally).map(|s| &**s));

    let mut output_templates = Vec::new();
    if let Some(out_node) = at.node.get("outputs") {
        for (k, v) in &raw.outputs {
            let node = out_node.get(k);
            cx.templates(v, node, &format!("/{k}"), &[], &mut output_templates);
        }
    }
    let effects = raw.effects.map(|e| {
        let span = at.node.get("effects").map_or(at.name_span, |n| n.span);
        (e, span)
    });
    let has_errors = cx.diags.iter().any(Diagnostic::is_error);
    let inputs = std::mem::take(&mut cx.inputs);
    let diags = cx.diags;
    if has_errors {
        return (None, diags);
    }
    // only a runbook that is kept has a digest: a runbook with errors is not hashed
    let digest = digest(&at.name, at.node);
    let rb = Runbook {
        name: at.name.clone(),
        file: at.file.clone(),
        span: at.name_span,
        pointer: at.pointer.to_owned(),
        description: raw.description.clone(),
        tags: raw.tags.clone(),
        inputs,
        effects,
        flow: raw.flow.unwrap_or_default(),
        max_parallel: raw.max_parallel,
        timeout_ms: raw.timeout_ms,
        steps,
        finally,
        outputs: raw.outputs.clone(),
        output_templates,
        digest,
        raw,
        root: Arc::clone(&at.root),
    };
    (Some(rb), diags)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

/// SHA-256 (hex) of the runbook's canonical JSON, its name included.
///
/// The digest is of the content, not the text: comments, layout, quoting style and YAML versus JSON do not
/// change it; any key or value does.
pub fn digest(name: &str, node: &Node) -> String {
    let mut hasher = Sha256::new();
    let mut buf = Vec::with_capacity(DIGEST_CHUNK + 4096);
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    encode(&mut buf, &mut hasher, node);
    hasher.update(&buf);
    hex(&hasher.finalize())
}

/// The encoding is hashed in chunks of about this size, so a large runbook is not encoded whole first.
const DIGEST_CHUNK: usize = 64 * 1024;

/// A canonical byte encoding of a node: each value tagged with its type, each string and collection with
/// its length.
fn encode(buf: &mut Vec<u8>, hasher: &mut Sha256, node: &Node) {
    use crate::parse::NodeValue as V;
    fn text(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    match &node.value {
        V::Null => buf.push(b'n'),
        V::Bool(b) => buf.push(if *b { b't' } else { b'f' }),
        V::Int(i) => {
            buf.push(b'i');
            buf.extend_from_slice(&i.to_le_bytes());
        }
        V::UInt(u) => {
            buf.push(b'u');
            buf.extend_from_slice(&u.to_le_bytes());
        }
        V::Float(f) => {
            buf.push(b'd');
            buf.extend_from_slice(&f.to_le_bytes());
        }
        V::Str(s) => {
            buf.push(b's');
            text(buf, s);
        }
        V::Seq(items) => {
            buf.push(b'[');
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                encode(buf, hasher, i);
                if buf.len() >= DIGEST_CHUNK {
                    hasher.update(&buf);
                    buf.clear();
                }
            }
        }
        V::Map(entries) => {
            buf.push(b'{');
            buf.extend_from_slice(&(entries.len() as u64).to_le_bytes());
            for (k, v) in entries {
                text(buf, &k.name);
                encode(buf, hasher, v);
                if buf.len() >= DIGEST_CHUNK {
                    hasher.update(&buf);
                    buf.clear();
                }
            }
        }
    }
}

/// Lower-case hex of bytes (for digests).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

struct Cx<'a> {
    file: &'a SourceFile,
    diags: Vec<Diagnostic>,
    inputs: IndexMap<String, Input>,
    /// Every step id seen (main, finally, rollback) and where.
    ids: HashMap<String, Span>,
    /// The help of `undefined-input` by input name, made once per name: a did-you-mean over every
    /// declared input, or their list, would otherwise cost a scan of the inputs per error.
    input_help: HashMap<String, String>,
    /// In the second half of a long list ([`Cx::half`]): the ids it declares, in order, to be
    /// declared after the first half's.
    deferred: Option<Vec<(String, Span)>>,
}

/// From this many main steps, the second half is analyzed on a scoped thread.
const SPLIT_STEPS: usize = 2048;

impl<'a> Cx<'a> {
    /// A context for the second half of the main steps: the same file and inputs, its own
    /// diagnostics, its ids deferred.
    fn half(&self) -> Cx<'a> {
        Cx {
            file: self.file,
            diags: Vec::new(),
            inputs: self.inputs.clone(),
            ids: HashMap::new(),
            input_help: HashMap::new(),
            deferred: Some(Vec::new()),
        }
    }

    /// Takes in the second half's diagnostics and declares its ids, in their order, as one pass
    /// would have (diagnostics are sorted by place later, so where in the list each lands does not
    /// matter).
    fn absorb(&mut self, half: Cx<'_>) {
        self.diags.extend(half.diags);
        for (id, span) in half.deferred.unwrap_or_default() {
            self.declare(&id, span);
        }
    }
}

impl Cx<'_> {
    fn inputs(&mut self, node: Option<&Node>, raw: Option<&RawInputs>) {
        match raw {
            None => {}
            Some(RawInputs::List(names)) => {
                for (i, name) in names.iter().enumerate() {
                    let span = node
                        .and_then(|n| n.items().get(i))
                        .map_or_else(Span::default, |n| n.span);
                    if self.inputs.contains_key(name) {
                        self.diags.push(
                            Diagnostic::error(
                                Code::DuplicateKey,
                                format!("input `{name}` is declared twice"),
                            )
                            .at(self.file, span),
                        );
                    }
                    self.inputs.insert(
                        name.clone(),
                        Input {
                            name: name.clone(),
                            ty: InputType::String,
                            description: None,
                            default: None,
                            required: true,
                            allowed: None,
                            pattern: None,
                            minimum: None,
                            maximum: None,
                            secret: false,
                        },
                    );
                }
            }
            Some(RawInputs::Map(map)) => {
                for (name, spec) in map {
                    let input = Input {
                        name: name.clone(),
                        ty: spec.ty.unwrap_or_default(),
                        description: spec.description.clone(),
                        default: spec.default.clone(),
                        required: spec.required.unwrap_or(spec.default.is_none()),
                        allowed: spec.allowed.clone(),
                        pattern: spec.pattern.clone(),
                        minimum: spec.minimum,
                        maximum: spec.maximum,
                        secret: spec.secret.unwrap_or(false),
                    };
                    let spec_node = node.and_then(|n| n.get(name));
                    let mut probe = input.clone();
                    probe.default = None;
                    match jsonschema::draft202012::new(&probe.schema()) {
                        Err(e) => self.diags.push(
                            Diagnostic::error(
                                Code::SchemaViolation,
                                format!("input `{name}` has an invalid constraint: {}", e.masked()),
                            )
                            .at(
                                self.file,
                                spec_node
                                    .and_then(|n| n.get("pattern"))
                                    .map_or(Span::default(), |n| n.span),
                            ),
                        ),
                        Ok(v) => {
                            if let Some(default) = &input.default
                                && let Err(e) = v.validate(default)
                            {
                                let span = spec_node
                                    .and_then(|n| n.get("default"))
                                    .map_or(Span::default(), |n| n.span);
                                self.diags.push(
                                    Diagnostic::error(
                                        Code::SchemaViolation,
                                        format!(
                                            "the default of input `{name}` does not fit it: {}",
                                            e.masked()
                                        ),
                                    )
                                    .at(self.file, span),
                                );
                            }
                        }
                    }
                    self.inputs.insert(name.clone(), input);
                }
            }
        }
    }

    fn declare(&mut self, id: &str, span: Span) {
        if let Some(deferred) = &mut self.deferred {
            deferred.push((id.to_owned(), span));
            return;
        }
        if let Some(first) = self.ids.get(id) {
            self.diags.push(
                Diagnostic::error(
                    Code::DuplicateStepId,
                    format!("step id `{id}` is used twice"),
                )
                .at(self.file, span)
                .label("second use")
                .secondary(*first, "first used here")
                .help("give each step a unique `id`"),
            );
        } else {
            self.ids.insert(id.to_owned(), span);
        }
    }

    fn step(&mut self, raw: &RawStep, node: Option<&Node>, pointer: String, phase: Phase) -> Step {
        let span_of = |k: &str| {
            node.and_then(|n| n.get(k))
                .map_or_else(|| node.map_or(Span::default(), |n| n.span), |n| n.span)
        };
        let id_span = span_of("id");
        self.declare(&raw.id, id_span);
        let foreach = raw.foreach.is_some();
        let mut extra: Vec<&str> = Vec::new();
        if foreach {
            extra.extend(["item", "index"]);
        }
        if raw.args.0.contains_key("target") {
            // the step's resolved target (its public view), which the executor provides
            extra.push("target");
        }
        let mut templates = Vec::new();
        let args_node = node.and_then(|n| n.get("args")).unwrap_or(&NULL_NODE);
        for (k, v) in &raw.args.0 {
            if !holds_template(v) {
                continue;
            }
            let esc = escape(k);
            self.templates(
                v,
                args_node.get(k),
                &format!("/args/{esc}"),
                &extra,
                &mut templates,
            );
        }
        if let Some(BoolOrTemplate::Template(t)) = &raw.when {
            self.templates(
                &Value::String(t.clone()),
                node.and_then(|n| n.get("when")),
                "/when",
                &extra,
                &mut templates,
            );
        }
        if let Some(f) = &raw.foreach {
            let v = match f {
                ListOrTemplate::List(l) => Value::Array(l.clone()),
                ListOrTemplate::Template(t) => Value::String(t.clone()),
            };
            self.templates(
                &v,
                node.and_then(|n| n.get("foreach")),
                "/foreach",
                &[],
                &mut templates,
            );
        }
        if let Some(until) = raw.retry.as_ref().and_then(|r| r.until.as_ref()) {
            let mut with_result = extra.clone();
            with_result.push("result");
            let until_node = node
                .and_then(|n| n.get("retry"))
                .and_then(|n| n.get("until"));
            self.templates(
                &Value::String(until.clone()),
                until_node,
                "/retry/until",
                &with_result,
                &mut templates,
            );
        }
        let needs = raw
            .needs
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let span = node
                    .and_then(|s| s.get("needs"))
                    .and_then(|s| s.items().get(i))
                    .map_or(id_span, |s| s.span);
                (StepId::new(n), span)
            })
            .collect();
        let rollback = raw.rollback.as_ref().map(|rb| {
            let rb_node = node.and_then(|n| n.get("rollback"));
            Arc::new(self.rollback(rb, rb_node, &raw.id, format!("{pointer}/rollback")))
        });
        let refs = step_refs(&templates);
        let (action, action_span) = action_of(&raw.args, args_node);
        Step {
            id: StepId::new(&raw.id),
            span: id_span,
            phase,
            pointer,
            tool: raw.tool.clone(),
            tool_span: span_of("tool"),
            action,
            action_span,
            args: Value::Object(raw.args.0.clone()),
            needs,
            refs,
            when: raw.when.clone(),
            foreach: raw.foreach.clone(),
            retry: raw.retry.clone(),
            timeout_ms: raw.timeout_ms,
            continue_on_error: raw.continue_on_error.unwrap_or(false),
            rollback,
            effects: raw.effects,
            description: raw.description.clone(),
            templates,
        }
    }

    fn rollback(
        &mut self,
        raw: &RawRollback,
        node: Option<&Node>,
        owner: &str,
        pointer: String,
    ) -> Step {
        let as_step = RawStep {
            id: raw
                .id
                .clone()
                .unwrap_or_else(|| format!("{owner}-rollback")),
            tool: raw.tool.clone(),
            args: raw.args.clone(),
            needs: Vec::new(),
            when: None,
            foreach: None,
            retry: raw.retry.clone(),
            timeout_ms: raw.timeout_ms,
            continue_on_error: None,
            rollback: None,
            effects: raw.effects,
            description: raw.description.clone(),
        };
        self.step(&as_step, node, pointer, Phase::Rollback)
    }

    /// Scans every template in `value`, checks its syntax and references, and records it.
    fn templates(
        &mut self,
        value: &Value,
        node: Option<&Node>,
        at: &str,
        extra: &[&str],
        out: &mut Vec<TemplateUse>,
    ) {
        match value {
            Value::String(s) if is_template(s) => {
                let span = node.map_or(Span::default(), |n| n.span);
                let (file_text, file) = (self.file.text(), self.file);
                let locate = |start: usize, end: usize| sub_span(file_text, span, s, start, end);
                match scan(s) {
                    Err(e) => {
                        let code = if s.len() > template::MAX_TEMPLATE_BYTES {
                            Code::InputTooLarge
                        } else {
                            Code::TemplateSyntax
                        };
                        self.diags.push(
                            Diagnostic::error(code, e.message).at(file, locate(e.start, e.end)),
                        );
                    }
                    Ok(sc) => {
                        if !sc.simple
                            && let Err(e) = template::renderer().check(s)
                        {
                            let sp = e.range.map_or(span, |(a, b)| locate(a, b));
                            self.diags.push(
                                Diagnostic::error(
                                    Code::TemplateSyntax,
                                    format!("template error: {}", e.message),
                                )
                                .at(file, sp),
                            );
                        }
                        for r in &sc.references {
                            self.reference(r, extra, locate(r.start, r.end));
                        }
                        out.push(TemplateUse {
                            at: at.to_owned(),
                            span,
                            text: s.clone(),
                            scan: sc,
                        });
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let child = node.and_then(|n| n.items().get(i));
                    self.templates(v, child, &format!("{at}/{i}"), extra, out);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    let child = node.and_then(|n| n.get(k));
                    let esc = escape(k);
                    self.templates(v, child, &format!("{at}/{esc}"), extra, out);
                }
            }
            _ => {}
        }
    }

    fn reference(&mut self, r: &template::Reference, extra: &[&str], span: Span) {
        let root = r.root.as_str();
        if !ROOTS.contains(&root) && !extra.contains(&root) {
            let mut candidates: Vec<&str> = ROOTS.to_vec();
            candidates.extend(extra);
            let help = suggestion(root, candidates.iter().copied()).unwrap_or_else(|| {
                let mut all = candidates.clone();
                all.sort_unstable();
                format!("templates can read: {}", all.join(", "))
            });
            let hint = match root {
                "item" | "index" => {
                    " (`item` and `index` exist only in a step with `foreach`)".to_owned()
                }
                "result" => " (`result` exists only in `retry.until`)".to_owned(),
                "target" => " (`target` exists only in a step with a `target` argument)".to_owned(),
                _ => String::new(),
            };
            self.diags.push(
                Diagnostic::error(
                    Code::UndefinedVariable,
                    format!("unknown template variable `{root}`{hint}"),
                )
                .at(self.file, span)
                .help(help),
            );
            return;
        }
        if root == "input"
            && let Some(key) = &r.key
            && !self.inputs.contains_key(key)
        {
            let inputs = &self.inputs;
            let help = self
                .input_help
                .entry(key.clone())
                .or_insert_with(|| {
                    suggestion(key, inputs.keys().map(String::as_str)).unwrap_or_else(|| {
                        if inputs.is_empty() {
                            format!("declare it under `inputs:` (e.g. `inputs: [{key}]`)")
                        } else {
                            format!(
                                "declare it under `inputs:`; declared: {}",
                                inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                            )
                        }
                    })
                })
                .clone();
            self.diags.push(
                Diagnostic::error(
                    Code::UndefinedInput,
                    format!("input `{key}` is not declared"),
                )
                .at(self.file, span)
                .label("used here")
                .help(help),
            );
        }
    }

    /// `steps.<id>` references must name a step of this runbook.
    fn check_step_refs<'s>(&mut self, steps: impl Iterator<Item = &'s Step>) {
        let mut all: Vec<&Step> = Vec::new();
        for s in steps {
            all.push(s);
            if let Some(rb) = &s.rollback {
                all.push(rb);
            }
        }
        // the did-you-mean of each unknown id, found once: it compares the id with every step id
        let mut helps: HashMap<&str, Option<String>> = HashMap::new();
        for s in all {
            for (id, span) in s.needs.iter().chain(s.refs.iter()) {
                if !self.ids.contains_key(id.as_str()) {
                    let ids = &self.ids;
                    let help = helps
                        .entry(id.as_str())
                        .or_insert_with(|| suggestion(id.as_str(), ids.keys().map(String::as_str)))
                        .clone();
                    self.diags.push(
                        Diagnostic::error(Code::UnknownStep, format!("there is no step `{id}`"))
                            .at(self.file, *span)
                            .label(format!("referenced by step `{}`", s.id))
                            .help_opt(help),
                    );
                }
            }
        }
    }
}

/// Whether a value holds a template anywhere (else [`Cx::templates`] has nothing to do with it).
fn holds_template(v: &Value) -> bool {
    match v {
        Value::String(s) => is_template(s),
        Value::Array(items) => items.iter().any(holds_template),
        Value::Object(map) => map.values().any(holds_template),
        _ => false,
    }
}

/// A key as a JSON pointer segment (`~` as `~0`, `/` as `~1`); most keys have neither, and are not copied.
fn escape(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains(['~', '/']) {
        key.replace('~', "~0").replace('/', "~1").into()
    } else {
        key.into()
    }
}

fn action_of(args: &RawArgs, node: &Node) -> (String, Span) {
    let action = args
        .0
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let span = node.get("action").map_or(node.span, |n| n.span);
    (action, span)
}

fn step_refs(templates: &[TemplateUse]) -> Vec<(StepId, Span)> {
    let mut out: Vec<(StepId, Span)> = Vec::new();
    for t in templates {
        for r in &t.scan.references {
            if r.root == "steps"
                && let Some(k) = &r.key
                && !out.iter().any(|(id, _)| id.as_str() == k)
            {
                out.push((StepId::new(k), t.span));
            }
        }
    }
    out
}

/// The span of bytes `start..end` of a template string inside its scalar node, when the scalar's source text
/// is the string itself (plain, or quoted without escapes); else the whole node.
pub fn sub_span(file_text: &str, node: Span, text: &str, start: usize, end: usize) -> Span {
    let Some(src) = file_text.get(node.start..node.end) else {
        return node;
    };
    let inner = if src == text {
        Some(node.start)
    } else if src.len() >= 2
        && (src.starts_with('"') || src.starts_with('\''))
        && &src[1..src.len() - 1] == text
    {
        Some(node.start + 1)
    } else {
        None
    };
    match inner {
        Some(base) if end <= text.len() && start <= end => {
            let s = Span::new(base + start, base + end.max(start + 1).min(text.len()));
            if s.is_empty() { node } else { s }
        }
        _ => node,
    }
}

#[cfg(test)]
mod tests {
    use crate::{Code, SourceFile, load};

    /// `n` steps (the first `deploy`, then `s1`, `s2` …), step `i` reading input `inputs[i % len]` and,
    /// but the first, needing step `needs[i % len]`.
    fn many(n: usize, inputs: &[&str], needs: &[&str]) -> SourceFile {
        let mut s = String::from("name: many\ninputs: [host, port]\nsteps:\n");
        for i in 0..n {
            let input = inputs[i % inputs.len()];
            let need = needs[i % needs.len()];
            if i == 0 {
                s.push_str("  - id: deploy\n    tool: state\n    needs: []\n");
            } else {
                s.push_str(&format!(
                    "  - id: s{i}\n    tool: state\n    needs: [{need}]\n"
                ));
            }
            s.push_str(&format!(
                "    args: {{action: get, key: \"{{{{ input.{input} }}}}\"}}\n"
            ));
        }
        SourceFile::new("many.yaml", s)
    }

    #[test]
    fn every_error_of_many_keeps_its_place_and_its_help() {
        let file = many(600, &["hots", "missing"], &["deploy", "deploi"]);
        let d = load(&file, None).diagnostics;
        let undefined: Vec<_> = d
            .iter()
            .filter(|d| d.code == Code::UndefinedInput)
            .collect();
        let unknown: Vec<_> = d.iter().filter(|d| d.code == Code::UnknownStep).collect();
        assert_eq!((undefined.len(), unknown.len()), (600, 300));
        // the help is found once per name, and is the same for every use
        for (i, u) in undefined.iter().enumerate() {
            let help = u.help.as_deref();
            if i % 2 == 0 {
                assert_eq!(help, Some("did you mean `host`?"), "{u}");
            } else {
                assert_eq!(
                    help,
                    Some("declare it under `inputs:`; declared: host, port")
                );
            }
        }
        // each of the 300 steps needing `deploi` is told the near id, found once among 600
        assert!(
            unknown
                .iter()
                .all(|u| u.help.as_deref() == Some("did you mean `deploy`?")),
            "{:?}",
            unknown[0].help
        );
        // sorted by position; the last one is located on the file's last step
        let last = undefined.last().expect("one");
        let lc = file.line_col(last.span.expect("span").start);
        assert_eq!(lc.line, 4 + 599 * 4 + 3);
        assert_eq!(
            last.location().as_deref(),
            Some(&*format!("many.yaml:{}:{}", lc.line, lc.col))
        );
        assert!(
            d.windows(2)
                .all(|w| w[0].span.map(|s| s.start) <= w[1].span.map(|s| s.start))
        );
    }

    /// The runbook at the root of `file`, analyzed in halves from `split` steps.
    fn analyzed_in(
        file: &SourceFile,
        root: &std::sync::Arc<crate::parse::Node>,
        name: &str,
        split: usize,
    ) -> (Option<crate::Runbook>, Vec<crate::Diagnostic>) {
        let raw = crate::schema::check_runbook(file, root, "").expect("shape");
        let at = super::Located {
            file,
            root: std::sync::Arc::clone(root),
            node: root,
            pointer: "",
            name: name.to_owned(),
            name_span: crate::Span::default(),
        };
        super::analyze_split(&at, raw, split)
    }

    #[test]
    fn the_halves_of_many_steps_are_analyzed_as_in_one_pass() {
        use super::SPLIT_STEPS;
        use crate::parse::parse;
        use std::sync::Arc;
        let mut s = String::from("name: many\ninputs: [host]\nsteps:\n");
        let n = SPLIT_STEPS + 10;
        for i in 0..n {
            // ids used again across the halves and within the second, rollbacks with and without
            // ids, template errors and references to steps on both sides (no unknown id is
            // near two known ones: which of two a did-you-mean names is the id map's order)
            let id = match i {
                4 | 1500 | 2052 => "twice".to_owned(),
                1030 => "s7-rollback".to_owned(),
                _ => format!("s{i}"),
            };
            s.push_str(&format!("  - id: {id}\n    tool: state\n"));
            s.push_str(&match i % 4 {
                0 => "    args: {action: get, key: \"{{ input.hots }}\"}\n".to_owned(),
                1 => format!("    args: {{action: get, key: \"{{{{ steps.s{}.v }}}}\"}}\n", n - i),
                2 => "    args: {action: get, key: \"{{ nope.x }}\"}\n    needs: [s3, zzz]\n".to_owned(),
                _ => "    args: {action: get, key: k}\n    rollback: {tool: state, args: {action: get, key: \"{{ input.host }}\"}}\n".to_owned(),
            });
        }
        let file = SourceFile::new("many.yaml", s);
        let root = Arc::new(parse(&file).expect("parse"));
        let run = |split: usize| {
            let (rb, diags) = analyzed_in(&file, &root, "many", split);
            let mut all = crate::Diagnostics::new();
            all.extend(diags);
            let diags: Vec<String> = all
                .into_sorted()
                .iter()
                .map(|d| d.to_json().to_string())
                .collect();
            (rb.is_some(), diags)
        };
        let (one, halves) = (run(usize::MAX), run(SPLIT_STEPS));
        assert!(!one.0 && !halves.0);
        for (a, b) in one.1.iter().zip(&halves.1) {
            assert_eq!(a, b);
        }
        assert_eq!(one.1.len(), halves.1.len());
        assert!(one.1.len() > 1500, "{}", one.1.len());
        let twice = one
            .1
            .iter()
            .filter(|d| d.contains("step id `twice` is used twice"));
        assert_eq!(twice.count(), 2);
        assert!(
            one.1
                .iter()
                .any(|d| d.contains("step id `s7-rollback` is used twice"))
        );
        // a runbook without errors: the same steps
        let clean = "name: clean\nsteps:\n".to_owned()
            + &(0..SPLIT_STEPS + 1)
                .map(|i| format!("  - {{id: c{i}, tool: state, args: {{action: get, key: k}}}}\n"))
                .collect::<String>();
        let file = SourceFile::new("clean.yaml", clean);
        let root = Arc::new(parse(&file).expect("parse"));
        let steps = |split: usize| {
            let (rb, diags) = analyzed_in(&file, &root, "clean", split);
            assert!(diags.is_empty());
            format!("{:?}", rb.expect("a runbook").steps)
        };
        assert_eq!(steps(usize::MAX), steps(SPLIT_STEPS));
    }

    #[test]
    fn the_digest_of_a_large_runbook_is_hashed_in_chunks_to_the_same_value() {
        let mut text = String::from("name: big\nsteps:\n");
        for i in 0..3000 {
            text.push_str(&format!(
                "  - {{id: s{i}, tool: state, args: {{action: get, key: k{i}}}}}\n"
            ));
        }
        let loaded = load(&SourceFile::new("big.yaml", text), None);
        assert!(!loaded.has_errors());
        // the digest this runbook had when its whole encoding was hashed at once
        assert_eq!(
            loaded.runbooks[0].digest,
            "7bc3b8892d9332b21ba7491cf9012c0774fe5f82218f3d1aa6f5957154024c5e"
        );
    }

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(super::hex(&[]), "");
    }
}
