//! One request path for every front end and for nested runs: find the runbook (in the catalog by name,
//! in a file by `path[#name]`, or given whole), compile it against the catalog, and resolve its inputs.
//! The CLI, the MCP server and `runbook.run` all call these, so a request gets the same diagnostics
//! whoever makes it.

use std::path::Path;
use std::sync::Arc;

use dsl::{Code, Diagnostic, Runbook};
use serde_json::{Map, Value};

use crate::catalog::Catalog;
use crate::plan::{CompileOptions, Plan};

/// Which runbook a request names.
#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    /// A runbook of the catalog.
    Name(&'a str),
    /// A runbook file, `path` or `path#name` (the file may hold several).
    File(&'a str),
    /// A runbook given whole (a JSON object), with the name it takes when it has none of its own.
    Inline(&'a Value, Option<&'a str>),
}

/// The runbook a request names, or why there is none (`unknown-runbook`, or the file's diagnostics).
pub fn find(catalog: &Catalog, which: Which<'_>) -> Result<Arc<Runbook>, Vec<Diagnostic>> {
    match which {
        Which::Name(name) => by_name(catalog, name),
        Which::File(arg) => in_file(arg),
        Which::Inline(v, name) => inline(v, name.unwrap_or(crate::plan::compile::INLINE_NAME)),
    }
}

fn by_name(catalog: &Catalog, name: &str) -> Result<Arc<Runbook>, Vec<Diagnostic>> {
    match catalog.get(name) {
        Some(e) => Ok(e.runbook.clone()),
        None => {
            let help = dsl::diagnostic::suggestion(name, catalog.names())
                .unwrap_or_else(|| "`infra list` shows the runbooks there are".to_owned());
            let mut diags = vec![
                Diagnostic::error(
                    Code::UnknownRunbook,
                    format!("there is no runbook `{name}`"),
                )
                .help(help),
            ];
            // a project file with errors may be where it was meant to be
            diags.extend(catalog.diagnostics().iter().cloned());
            Err(diags)
        }
    }
}

fn in_file(arg: &str) -> Result<Arc<Runbook>, Vec<Diagnostic>> {
    let (path, pick) = match arg.split_once('#') {
        Some((p, n)) => (p, Some(n)),
        None => (arg, None),
    };
    let file = crate::ctx::read_source(Path::new(path)).map_err(|d| vec![d])?;
    let stem = Path::new(path).file_stem().and_then(|s| s.to_str());
    let loaded = dsl::load(&file, stem);
    if loaded.has_errors() {
        return Err(loaded.diagnostics);
    }
    let names: Vec<String> = loaded.runbooks.iter().map(|r| r.name.clone()).collect();
    let chosen = match pick {
        Some(n) => loaded.runbooks.into_iter().find(|r| r.name == n),
        None if names.len() == 1 => loaded.runbooks.into_iter().next(),
        None => {
            return Err(vec![
                Diagnostic::error(
                    Code::UnknownRunbook,
                    format!("`{path}` holds {} runbooks", names.len()),
                )
                .help(format!(
                    "pick one with `{path}#<name>`: {}",
                    names.join(", ")
                )),
            ]);
        }
    };
    chosen.map(Arc::new).ok_or_else(|| {
        vec![
            Diagnostic::error(
                Code::UnknownRunbook,
                format!("`{path}` has no runbook `{}`", pick.unwrap_or_default()),
            )
            .help_opt(dsl::diagnostic::suggestion(
                pick.unwrap_or_default(),
                names.iter().map(String::as_str),
            )),
        ]
    })
}

fn inline(v: &Value, name: &str) -> Result<Arc<Runbook>, Vec<Diagnostic>> {
    dsl::load_value(v, name).map(Arc::new)
}

/// Compiles `rb` against the catalog (nested runbooks are found there) and resolves `given` against
/// its inputs. The plan's warnings are the caller's to show.
pub fn prepare(
    catalog: &Catalog,
    rb: &Arc<Runbook>,
    given: &Map<String, Value>,
) -> Result<(Plan, Map<String, Value>), Vec<Diagnostic>> {
    let plan = compile(catalog, rb)?;
    let inputs = dsl::resolve_inputs(rb, given)?;
    Ok((plan, inputs))
}

/// Compiles `rb` against the catalog.
pub fn compile(catalog: &Catalog, rb: &Arc<Runbook>) -> Result<Plan, Vec<Diagnostic>> {
    crate::plan::compile(
        rb.clone(),
        &CompileOptions {
            resolver: Some(catalog),
            stack: Vec::new(),
        },
    )
}
