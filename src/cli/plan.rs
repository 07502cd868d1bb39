//! `infra plan <runbook> --input k=v …`: the rendered plan (nodes, dependencies, commands where the inputs
//! decide them, effects, digest). Nothing runs.

use std::path::PathBuf;

use dsl::{Code, Diagnostic};
use engine::Catalog;
use serde_json::{Map, Value};

use super::{OK, USAGE, catalog_options, find_runbook, report};
use crate::render;

/// A runbook and its inputs, as `plan` and `run` take them.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// A runbook name, or a file (`path[#name]`).
    pub(super) runbook: String,
    /// An input, `name=value` (repeatable). Non-string inputs are read as YAML (`n=3`, `l=[a, b]`).
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
    pub(super) inputs: Vec<String>,
    /// A YAML or JSON file with a mapping of inputs (`--input` wins over it).
    #[arg(long, value_name = "FILE")]
    pub(super) input_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// The plan as JSON.
    #[arg(long)]
    json: bool,
}

/// Finds the runbook, compiles it and checks its inputs, printing every problem. `Err` is the exit status.
pub fn prepare(catalog: &Catalog, t: &Target) -> Result<(engine::Plan, Map<String, Value>), u8> {
    prepare_as(catalog, t, false).map_err(|(code, _)| code)
}

/// [`prepare`]; with `json`, a refusal is also told on stdout as `{"ok": false, "status":
/// "invalid", "diagnostics": […]}` (nothing ran). A refusal's error is the exit code and the first
/// diagnostic's message.
pub fn prepare_as(
    catalog: &Catalog,
    t: &Target,
    json: bool,
) -> Result<(engine::Plan, Map<String, Value>), (u8, String)> {
    let refuse = |d: &[Diagnostic], code: Option<u8>| {
        if json {
            render::json(&serde_json::json!({
                "ok": false, "status": "invalid", "run_id": null,
                "diagnostics": d.iter().map(Diagnostic::to_json).collect::<Vec<_>>(),
            }));
        }
        let first = d
            .iter()
            .find(|d| d.is_error())
            .map(|d| d.message.clone())
            .unwrap_or_default();
        let code = match code {
            Some(c) => {
                render::diagnostics(d);
                c
            }
            None => report(d),
        };
        (code, first)
    };
    let rb = find_runbook(catalog, &t.runbook).map_err(|d| refuse(&d, None))?;
    let given = gather_inputs(&rb, t.input_file.as_deref(), &t.inputs)
        .map_err(|d| refuse(&d, Some(USAGE)))?;
    let plan = engine::request::compile(catalog, &rb).map_err(|d| refuse(&d, None))?;
    render::diagnostics(plan.warnings());
    let inputs = dsl::resolve_inputs(&rb, &given).map_err(|d| refuse(&d, Some(USAGE)))?;
    Ok((plan, inputs))
}

pub fn run(args: Args) -> u8 {
    let catalog = Catalog::load(&catalog_options());
    let (plan, inputs) = match prepare(&catalog, &args.target) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let rendered = match plan.render(&inputs) {
        Ok(r) => r,
        Err(d) => return report(&d),
    };
    if args.json {
        render::json(&rendered.json);
    } else {
        let v = super::engine().verdict(&plan, &rendered, false);
        render::out(&format!(
            "{}policy: {} ({}: {})\n",
            human(&rendered.json),
            v.decision.as_str(),
            v.rule,
            v.reason
        ));
    }
    OK
}

/// Inputs from `--input-file` and `--input k=v` (the latter win), typed by the runbook's declarations.
fn gather_inputs(
    rb: &dsl::Runbook,
    input_file: Option<&std::path::Path>,
    inputs: &[String],
) -> Result<Map<String, Value>, Vec<Diagnostic>> {
    let mut given = Map::new();
    if let Some(path) = input_file {
        let file = engine::ctx::read_source(path).map_err(|d| vec![d])?;
        let node = dsl::parse::parse(&file).map_err(|d| vec![d])?;
        match node.to_json() {
            Value::Object(m) => given.extend(m),
            Value::Null => {}
            _ => {
                return Err(vec![
                    Diagnostic::error(
                        Code::InvalidInput,
                        "an input file must hold a mapping of name to value",
                    )
                    .in_file(&file),
                ]);
            }
        }
    }
    for kv in inputs {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(vec![
                Diagnostic::error(Code::InvalidInput, format!("`--input {kv}` has no `=`"))
                    .help("write `--input name=value`"),
            ]);
        };
        let ty = rb.inputs.get(k).map_or(dsl::InputType::String, |i| i.ty);
        given.insert(k.to_owned(), dsl::coerce_input(ty, v));
    }
    Ok(given)
}

pub(super) fn human(p: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut out = format!(
        "plan {} ({}), effects: {}\n",
        s(&p["runbook"]),
        s(&p["source"]),
        s(&p["effects"])
    );
    if let Some(d) = p["description"].as_str() {
        out.push_str(&format!("  {}\n", d.trim()));
    }
    if let Some(inputs) = p["inputs"].as_object()
        && !inputs.is_empty()
    {
        out.push_str("inputs:\n");
        for (k, v) in inputs {
            out.push_str(&format!("  {k} = {v}\n"));
        }
    }
    out.push_str("steps:\n");
    for (i, n) in p["nodes"].as_array().into_iter().flatten().enumerate() {
        let phase = if n["phase"] == "finally" {
            " [finally]"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {}. {}  {}.{}  {}{}\n",
            i + 1,
            s(&n["id"]),
            s(&n["tool"]),
            s(&n["action"]),
            s(&n["effect"]),
            phase
        ));
        let needs: Vec<String> = n["needs"].as_array().into_iter().flatten().map(s).collect();
        if !needs.is_empty() {
            out.push_str(&format!("     needs: {}\n", needs.join(", ")));
        }
        if let Some(c) = n["command"].as_str() {
            out.push_str(&format!("     command: {c}\n"));
        } else {
            let mut args = n["args"].clone();
            if let Some(o) = args.as_object_mut() {
                o.shift_remove("action");
            }
            out.push_str(&format!("     args: {args}\n"));
        }
        for key in ["when", "foreach", "retry", "timeout_ms"] {
            if !n[key].is_null() {
                out.push_str(&format!("     {key}: {}\n", n[key]));
            }
        }
        if let Some(rb) = n.get("rollback") {
            out.push_str(&format!(
                "     rollback: {}  {}.{}\n",
                s(&rb["id"]),
                s(&rb["tool"]),
                s(&rb["action"])
            ));
        }
    }
    out.push_str(&format!("digest: sha256:{}\n", s(&p["digest"])));
    out
}
