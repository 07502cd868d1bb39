//! `infra graph <runbook> --format mermaid|dot|svg`.

use clap::ValueEnum;
use engine::{Catalog, CompileOptions};

use super::{OK, catalog_options, find_runbook, report};
use crate::render;

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum GraphFormat {
    /// Mermaid `flowchart` text (renders in GitHub and GitLab Markdown).
    #[default]
    Mermaid,
    /// Graphviz DOT (`infra graph rb --format dot | dot -Tsvg`).
    Dot,
    /// A standalone SVG drawing, laid out by infra (`infra graph rb --format svg > rb.svg`).
    Svg,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A runbook name, or a file (`path[#name]`).
    runbook: String,
    /// The drawing language.
    #[arg(long, value_enum, default_value_t)]
    format: GraphFormat,
}

pub fn run(args: Args) -> u8 {
    let catalog = Catalog::load(&catalog_options());
    let rb = match find_runbook(&catalog, &args.runbook) {
        Ok(rb) => rb,
        Err(d) => return report(&d),
    };
    let opts = CompileOptions {
        resolver: Some(&catalog),
        stack: Vec::new(),
    };
    match engine::compile(rb, &opts) {
        Ok(plan) => {
            render::diagnostics(plan.warnings());
            render::out(&match args.format {
                GraphFormat::Mermaid => plan.to_mermaid(),
                GraphFormat::Dot => plan.to_dot(),
                GraphFormat::Svg => {
                    let p = plan.to_json();
                    engine::report::svg::graph(&engine::report::View::of_plan(&p), None, true)
                }
            });
            OK
        }
        Err(d) => report(&d),
    }
}
