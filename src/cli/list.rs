//! `infra list`: name, source, effects, tags and description of every runbook infra can find, and which
//! project runbooks replace a built-in one.

use engine::{Catalog, CompileOptions};
use serde_json::json;

use super::{OK, catalog_options};
use crate::render;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// How many runbooks to show (all when not given).
    #[arg(short = 'n', long)]
    limit: Option<usize>,
}

/// The width a column may not take more of on a terminal (the description takes what is left).
const TAGS_MAX: usize = 24;

/// `text` cut to `width` characters, an ellipsis marking the cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    text.chars().take(width - 1).collect::<String>() + "…"
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
        .take(args.limit.unwrap_or(usize::MAX))
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
    // on a terminal every line fits its width; piped, lines are whole (for grep and scripts)
    let term = render::stdout_width();
    let name_w = rows
        .iter()
        .filter_map(|r| r["name"].as_str())
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let tags_of = |r: &serde_json::Value| -> String {
        r["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let tags_w = rows
        .iter()
        .map(|r| tags_of(r).chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, if term.is_some() { TAGS_MAX } else { usize::MAX });
    let line = |name: &str, source: &str, effects: &str, tags: &str, desc: &str| {
        let head = format!(
            "{:name_w$}  {:8}  {:11}  {:tags_w$}  ",
            name,
            source,
            effects,
            fit(tags, tags_w)
        );
        let whole = match term {
            // the description takes what is left of the width
            Some(w) => {
                let left = w.saturating_sub(head.chars().count());
                fit(&(head + &fit(desc, left)), w)
            }
            None => head + desc,
        };
        whole.trim_end().to_owned() + "\n"
    };
    let mut out = line("NAME", "SOURCE", "EFFECTS", "TAGS", "DESCRIPTION");
    for r in &rows {
        let effects = r["effects"].as_str().unwrap_or("(invalid)");
        let desc = r["description"]
            .as_str()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mut source = r["source"].as_str().unwrap_or("").to_owned();
        if r["overrides"] == "builtin" {
            source.push('*');
        }
        out.push_str(&line(
            r["name"].as_str().unwrap_or(""),
            &source,
            effects,
            &tags_of(r),
            &desc,
        ));
    }
    if rows.iter().any(|r| r["overrides"] == "builtin") {
        out.push_str("* replaces the built-in runbook of the same name\n");
    }
    render::out(&out);
    if !catalog.diagnostics().is_empty() {
        render::note(&format!(
            "{} problem(s) in project runbook files; run `infra validate` to see them\n",
            catalog.diagnostics().len()
        ));
    }
    OK
}
