//! `infra list`: name, source, effects, tags and description of every runbook infra can find, and which
//! project runbooks replace a built-in one.

use engine::{Catalog, CompileOptions};
use serde_json::json;

use super::{OK, catalog_options};
use crate::render;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> u8 {
    let catalog = Catalog::load(&catalog_options());
    let opts = CompileOptions {
        resolver: Some(&catalog),
        stack: Vec::new(),
    };
    let rows: Vec<serde_json::Value> = catalog
        .entries()
        .into_iter()
        .map(|e| {
            let rb = &e.runbook;
            let compiled = engine::compile(rb.clone(), &opts);
            let effects = match &compiled {
                Ok(p) => Some(rb.effects.map_or(p.effects(), |(d, _)| d)),
                Err(_) => None,
            };
            json!({
                "name": rb.name,
                "source": e.origin,
                "overrides": e.overrides,
                "path": rb.file.name(),
                "effects": effects,
                "ok": compiled.is_ok(),
                "tags": rb.tags,
                "description": rb.description,
                "digest": rb.digest,
            })
        })
        .collect();
    if args.json {
        render::json(
            &json!({ "runbooks": rows, "problems": render::diagnostics_json(catalog.diagnostics()) }),
        );
        return OK;
    }
    let width = rows
        .iter()
        .filter_map(|r| r["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:width$}  {:8}  {:11}  {:20}  DESCRIPTION\n",
        "NAME", "SOURCE", "EFFECTS", "TAGS"
    );
    for r in &rows {
        let tags: Vec<&str> = r["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        let effects = r["effects"].as_str().unwrap_or("(invalid)");
        let mut desc = r["description"].as_str().unwrap_or("").replace('\n', " ");
        if desc.chars().count() > 70 {
            desc = desc.chars().take(69).collect::<String>() + "…";
        }
        let mut source = r["source"].as_str().unwrap_or("").to_owned();
        if r["overrides"] == "builtin" {
            source.push('*');
        }
        out.push_str(&format!(
            "{:width$}  {:8}  {:11}  {:20}  {}\n",
            r["name"].as_str().unwrap_or(""),
            source,
            effects,
            tags.join(","),
            desc
        ));
    }
    if rows.iter().any(|r| r["overrides"] == "builtin") {
        out.push_str("* replaces the built-in runbook of the same name\n");
    }
    render::out(&out);
    if !catalog.diagnostics().is_empty() {
        render::err(&format!(
            "{} problem(s) in project runbook files; run `infra validate` to see them\n",
            catalog.diagnostics().len()
        ));
    }
    OK
}
