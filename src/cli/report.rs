//! `infra report <run-id> [-o FILE] [--full-graph] [--open]`: one self-contained HTML file of a run
//! (header, why it ended, graph, timeline, step table), made by `Engine::run_report` from what the
//! run recorded. Without `-o` it is (re)written as the run's own `report.html`; `-o -` prints it.

use std::path::PathBuf;

use engine::run::ReportOptions;

use super::{FAILED, OK, engine};
use crate::render;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's id, or any unique prefix of it (`infra runs list` shows them).
    id: String,
    /// Where to write the report (`-` for stdout); by default the run's directory, `report.html`.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Draw every step, even past 60 (by default a big run's graph shows the failure's neighbourhood).
    #[arg(long)]
    full_graph: bool,
    /// Open the report in the desktop's browser (`xdg-open`, or `open` on macOS).
    #[arg(long)]
    open: bool,
}

pub fn run(args: Args) -> u8 {
    let engine = engine();
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => {
            render::err(&format!("error: {e}\n"));
            return FAILED;
        }
    };
    let run = match super::ids::run_row(store, &args.id) {
        Ok(run) => run,
        Err(code) => return code,
    };
    let to_stdout = args.output.as_deref() == Some(std::path::Path::new("-"));
    let path = match &args.output {
        Some(p) if !to_stdout => p.clone(),
        _ => PathBuf::from(run["dir"].as_str().unwrap_or(".")).join("report.html"),
    };
    let opts = ReportOptions {
        full_graph: args.full_graph,
        output: (!to_stdout).then(|| path.clone()),
    };
    let html = match engine.run_report(&run, &opts) {
        Ok(h) => h,
        Err(e) => {
            render::err(&format!("error: cannot read the run's journal: {e}\n"));
            return FAILED;
        }
    };
    if to_stdout {
        render::out(&html);
        return OK;
    }
    if let Err(e) = std::fs::write(&path, html) {
        render::err(&format!("error: cannot write `{}`: {e}\n", path.display()));
        return FAILED;
    }
    render::out(&format!("{}\n", path.display()));
    if args.open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        if let Err(e) = std::process::Command::new(opener)
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            render::err(&format!("warning: cannot start `{opener}`: {e}\n"));
        }
    }
    OK
}
