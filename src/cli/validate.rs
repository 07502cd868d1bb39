//! `infra validate <file|name …>`: every problem in the given runbooks, rustc-style or as JSON.
//! The catalog is loaded only when a check needs it (a name, a nested runbook, capabilities,
//! `--fix`, or no target at all).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use dsl::{Diagnostic, Runbook};
use engine::{Catalog, CatalogOptions, CompileOptions, Resolve};
use serde_json::json;

use super::{FAILED, Format, OK, USAGE, catalog_options, find_runbook, looks_like_path};
use crate::render;

mod fix;

/// Checks a capabilities file (`file`, else the project's, if it has one) against the catalog.
fn capabilities(
    catalog: &Catalog,
    file: Option<&Path>,
    diags: &mut Vec<Diagnostic>,
    checked: &mut Vec<serde_json::Value>,
) {
    let mut config = super::config();
    if let Some(f) = file {
        config.capabilities_path = Some(f.to_path_buf());
    }
    let caps = engine::capability::load(&config, catalog);
    let Some(path) = caps.file.clone() else {
        return;
    };
    let errors = caps.diagnostics.iter().any(Diagnostic::is_error);
    checked.push(json!({
        "source": path.display().to_string(),
        "ok": !errors,
        "capabilities": caps.entries.values().filter(|e| e.origin == engine::Origin::Project).count(),
    }));
    diags.extend(caps.diagnostics);
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Runbook files or names; none means every runbook infra can find.
    targets: Vec<String>,
    /// `human` (default) or `json`.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// The same as `--format json`, as every other command takes it.
    #[arg(long)]
    json: bool,
    /// Rewrite files written in the original product's syntax into the current one (atomically),
    /// printing each change; a file with errors (or a YAML file with comments) is left as it is and
    /// makes the exit status 1; built-ins are never rewritten.
    #[arg(long)]
    fix: bool,
}

/// The catalog, loaded when first needed: checking a file whose steps run no other runbook needs
/// none of it.
struct Lazy {
    opts: CatalogOptions,
    catalog: OnceLock<Catalog>,
}

impl Lazy {
    fn new() -> Self {
        Lazy {
            opts: catalog_options(),
            catalog: OnceLock::new(),
        }
    }

    fn get(&self) -> &Catalog {
        self.catalog.get_or_init(|| Catalog::load(&self.opts))
    }
}

impl Resolve for Lazy {
    fn resolve(&self, name: &str) -> Option<Arc<Runbook>> {
        self.get().resolve(name)
    }
}

pub fn run(args: Args) -> u8 {
    let mut catalog = Lazy::new();
    let (mut fixed, mut unfixed) = (Vec::new(), false);
    if args.fix {
        match fix::files(catalog.get(), &args.targets) {
            Ok(f) => (fixed, unfixed) = f,
            Err(code) => return code,
        }
        if !fixed.is_empty() {
            catalog = Lazy::new();
        }
    }
    let catalog = catalog;
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut checked: Vec<serde_json::Value> = Vec::new();
    let mut usage = false;

    let compile_one =
        |rb: Arc<Runbook>, diags: &mut Vec<Diagnostic>, checked: &mut Vec<serde_json::Value>| {
            let opts = CompileOptions {
                resolver: Some(&catalog),
                stack: Vec::new(),
            };
            let (ok, effects, found) = match engine::compile(rb.clone(), &opts) {
                Ok(plan) => {
                    let r = (true, Some(plan.effects()), plan.warnings().to_vec());
                    // a one-shot command: the plan (and the runbook it holds) is freed by the
                    // process's exit, not node by node (a tenth of a 10,000-step validate)
                    std::mem::forget(plan);
                    r
                }
                Err(d) => (false, None, d),
            };
            diags.extend(found);
            checked.push(json!({
                "name": rb.name,
                "source": rb.file.name(),
                "ok": ok,
                "effects": effects,
                "digest": rb.digest,
            }));
        };

    if args.targets.is_empty() {
        diags.extend(catalog.get().diagnostics().iter().cloned());
        for e in catalog.get().entries() {
            compile_one(e.runbook.clone(), &mut diags, &mut checked);
        }
        capabilities(catalog.get(), None, &mut diags, &mut checked);
    }
    for t in &args.targets {
        if engine::capability::is_capabilities_file(Path::new(t)) && Path::new(t).is_file() {
            capabilities(catalog.get(), Some(Path::new(t)), &mut diags, &mut checked);
        } else if looks_like_path(t) && !t.contains('#') {
            match engine::ctx::read_source(Path::new(t)) {
                Ok(file) => {
                    let stem = Path::new(t).file_stem().and_then(|s| s.to_str());
                    let loaded = dsl::load(&file, stem);
                    let failed = loaded.has_errors();
                    diags.extend(loaded.diagnostics);
                    if failed && loaded.runbooks.is_empty() {
                        checked.push(json!({"source": t, "ok": false}));
                    }
                    for rb in loaded.runbooks {
                        compile_one(Arc::new(rb), &mut diags, &mut checked);
                    }
                }
                Err(d) => {
                    usage = true;
                    diags.push(d);
                }
            }
        } else {
            match find_runbook(catalog.get(), t) {
                Ok(rb) => compile_one(rb, &mut diags, &mut checked),
                Err(d) => {
                    usage = true;
                    diags.extend(d);
                }
            }
        }
    }

    let mut all = dsl::Diagnostics::new();
    all.extend(diags);
    let diags = all.into_sorted();
    let errors = diags.iter().filter(|d| d.is_error()).count();
    match if args.json { Format::Json } else { args.format } {
        Format::Json => render::json(&json!({
            "ok": errors == 0,
            "errors": errors,
            "warnings": diags.len() - errors,
            "runbooks": checked,
            "diagnostics": render::diagnostics_json(&diags),
            "fixed": if args.fix { json!(fixed) } else { json!(null) },
        })),
        Format::Human => {
            if args.fix {
                fix::print(&fixed, unfixed);
            }
            render::diagnostics(&diags);
            if errors == 0 {
                let caps = checked
                    .iter()
                    .filter(|c| c.get("capabilities").is_some())
                    .count();
                let n = checked.len() - caps;
                render::out(&format!(
                    "ok: {n} runbook{} checked{}\n",
                    if n == 1 { "" } else { "s" },
                    if caps > 0 {
                        " and the capabilities file"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    if usage {
        USAGE
    } else if errors > 0 || unfixed {
        FAILED
    } else {
        OK
    }
}
