//! `infra context [PATH] [--refresh]`: what the project is (tags and the files that show them).
//! `infra intent <action> [TYPE]`: `list`, `suggest`, `explain`, `compile`, `dry-run`, `execute`
//! (`--apply` for a write intent, `--confirm` as well for an irreversible one), through
//! `engine::intent` like the MCP `intent` tool. Exit 0 done, 1 the run failed, 2 refused or bad input.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::{FAILED, OK, USAGE, engine};
use crate::render;

#[derive(clap::Args, Debug)]
pub struct ContextArgs {
    /// A directory of the project (default: the working directory).
    path: Option<PathBuf>,
    /// Walk the project again instead of using the cached answer.
    #[arg(long)]
    refresh: bool,
    /// Print the context as JSON.
    #[arg(long)]
    json: bool,
}

/// `infra context`.
pub fn context(a: ContextArgs) -> u8 {
    match engine::intent::context_of(a.path.as_deref(), a.refresh) {
        Ok(c) => {
            if a.json {
                render::json(&c.to_json());
            } else {
                let mut text = format!(
                    "root: {}\ntags: {}\n",
                    c.root.display(),
                    if c.tags.is_empty() {
                        "(none)".into()
                    } else {
                        c.tags.join(", ")
                    }
                );
                for (tag, files) in &c.files {
                    text += &format!("  {tag}: {}\n", files.join(", "));
                }
                if let Some(s) = &c.stopped {
                    text += &format!("note: the scan {s}\n");
                }
                render::out(&text);
            }
            OK
        }
        Err(e) => {
            render::err(&format!("error: {}\nhelp: {}\n", e.message, e.hint));
            USAGE
        }
    }
}

/// One input's value as shown (secrets masked).
fn shown_steps_value(
    e: &engine::run::Engine,
    r: &engine::capability::resolve::Resolution,
    cap: &str,
    k: &str,
) -> Value {
    let v = engine::intent::shown(e, r);
    v["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["capability"] == cap))
        .map_or(Value::Null, |s| s["inputs"][k].clone())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    List,
    Suggest,
    Explain,
    Compile,
    DryRun,
    Execute,
}

#[derive(clap::Args, Debug)]
pub struct IntentArgs {
    /// What to do.
    #[arg(value_enum)]
    action: Action,
    /// The intent type (`repo.snapshot`, `k8s.diff`).
    intent: Option<String>,
    /// An input, `name=value` (repeatable); a value that reads as JSON is typed (`n=3`, `l=[1,2]`).
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// Pick this capability.
    #[arg(long)]
    capability: Option<String>,
    /// A target by name (`target.*` in a capability's `map`).
    #[arg(long)]
    target: Option<String>,
    /// The project directory (default: the working directory).
    #[arg(long)]
    repo_root: Option<PathBuf>,
    /// Execute a write intent.
    #[arg(long)]
    apply: bool,
    /// Execute an irreversible intent (with `--apply`).
    #[arg(long)]
    confirm: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `infra intent`.
pub fn intent(a: IntentArgs) -> u8 {
    let mut inputs = Map::new();
    for kv in &a.inputs {
        let Some((k, v)) = kv.split_once('=') else {
            render::err(&format!(
                "error: `--input {kv}` has no `=`\nhelp: write `--input name=value`\n"
            ));
            return USAGE;
        };
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        inputs.insert(k.to_owned(), value);
    }
    let e = engine();
    let ask = engine::intent::Ask {
        intent: a.intent.clone().unwrap_or_default(),
        capability: a.capability.clone(),
        inputs,
        target: a.target.clone(),
        repo_root: a.repo_root.clone(),
        apply: a.apply,
        confirm: a.confirm,
        front_end: "cli",
    };
    if !matches!(a.action, Action::List | Action::Suggest)
        && ask.intent.is_empty()
        && ask.capability.is_none()
    {
        render::err(
            "error: name the intent (`infra intent explain repo.snapshot`)\nhelp: `infra intent suggest` shows what applies here\n",
        );
        return USAGE;
    }
    let out = |v: &Value, text: String| {
        if a.json {
            render::json(v);
        } else {
            render::out(&text);
        }
    };
    let result = match a.action {
        Action::List => {
            let caps = engine::intent::capabilities(&e);
            let items: Vec<Value> = caps
                .entries
                .values()
                .map(engine::capability::Entry::to_json)
                .collect();
            let text = caps
                .entries
                .values()
                .map(|c| {
                    format!(
                        "{:<28} {:<24} {}\n",
                        c.cap.intent_of(&c.name),
                        c.name,
                        c.cap.description.as_deref().unwrap_or("")
                    )
                })
                .collect();
            out(&json!({"capabilities": items}), text);
            if caps.has_errors() {
                render::diagnostics(&caps.diagnostics);
                return FAILED;
            }
            Ok(OK)
        }
        Action::Suggest => engine::intent::context_of(a.repo_root.as_deref(), false).map(|ctx| {
            let s = engine::capability::resolve::suggest(&engine::intent::capabilities(&e), &ctx);
            let text = s
                .iter()
                .map(|x| {
                    format!(
                        "{:<28} {}\n",
                        x["intent"].as_str().unwrap_or(""),
                        x["reason"].as_str().unwrap_or("")
                    )
                })
                .collect();
            out(
                &json!({"root": ctx.root, "tags": ctx.tags, "suggestions": s}),
                text,
            );
            OK
        }),
        Action::Explain => engine::intent::resolve(&e, &ask).map(|(ctx, r)| {
            let mut text = format!(
                "intent {} → capability {}\nwhy: {}\n",
                r.intent, r.capability, r.why
            );
            for s in &r.steps {
                text += &format!("runbook {}:\n", s.runbook.as_deref().unwrap_or("-"));
                for (k, src) in &s.sources {
                    text += &format!(
                        "  {k} = {} ({})\n",
                        shown_steps_value(&e, &r, &s.capability, k),
                        src.as_str().unwrap_or("")
                    );
                }
            }
            if !r.missing.is_empty() {
                text += &format!("missing: {}\n", r.missing.join(", "));
            }
            let mut v = engine::intent::shown(&e, &r);
            v["root"] = json!(ctx.root);
            out(&v, text);
            OK
        }),
        Action::Compile | Action::DryRun => engine::intent::compile(&e, &ask).map(|c| {
            let mut v = c.to_json();
            let mut text = format!(
                "intent {} → capability {}, effects {}\n",
                c.resolution.intent,
                c.resolution.capability,
                c.effect()
            );
            for rb in &c.runbooks {
                text += &format!("runbook {}:\n", rb["runbook"].as_str().unwrap_or(""));
                for n in rb["plan"]["nodes"].as_array().into_iter().flatten() {
                    text += &format!(
                        "  {} {}.{} ({})\n",
                        n["id"].as_str().unwrap_or(""),
                        n["tool"].as_str().unwrap_or(""),
                        n["action"].as_str().unwrap_or(""),
                        n["effect"].as_str().unwrap_or("")
                    );
                }
            }
            match &c.digest {
                Some(d) => text += &format!("digest: {d}\n"),
                None => text += &format!("missing: {}\n", c.resolution.missing.join(", ")),
            }
            if a.action == Action::DryRun {
                v["preview"] = engine::intent::preview(&c);
                text += &format!(
                    "would change: {}\n",
                    v["preview"]["would_change"].as_array().map_or(0, Vec::len)
                );
            }
            out(&v, text);
            OK
        }),
        Action::Execute => {
            let opts = engine::run::RunOptions {
                cancel: engine::run::CancelToken::new(),
                depth: 0,
                progress: None,
                followed: false,
            };
            engine::intent::execute(&e, &ask, &opts).map(|(c, o)| {
                let v = e.redactor().redact_value(&json!({"ok": o.ok(), "run_id": o.run_id, "intent": c.resolution.intent, "capability": c.resolution.capability, "status": o.status, "outputs": o.outputs, "evidence": o.uri_base, "error": o.error.as_ref().map(|x| json!({"kind": x.kind, "message": x.message})), "approval": o.approval}));
                let mut text = format!("intent {} ({}): {}\nrun_id: {}\nevidence: {}\n", c.resolution.intent, c.resolution.capability, render::status(o.status, render::Stream::Out), o.run_id, o.uri_base);
                if let Some(a) = &o.approval {
                    text.push_str(&format!("approval required: plan digest {}\n  {}\n", a["digest"].as_str().unwrap_or_default(), a["how"].as_str().unwrap_or_default()));
                }
                out(&v, text);
                if o.ok() { OK } else { FAILED }
            })
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if a.json {
                render::json(
                    &json!({"ok": false, "error": {"kind": err.kind, "message": err.message, "hint": err.hint, "path": err.path, "details": err.details}, "diagnostics": render::diagnostics_json(&err.diagnostics)}),
                );
            } else {
                render::diagnostics(&err.diagnostics);
                render::err(&format!(
                    "error[{}]: {}\nhelp: {}\n",
                    err.kind, err.message, err.hint
                ));
            }
            USAGE
        }
    }
}
