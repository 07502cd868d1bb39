//! A run's picture on disk: at the end of every runbook run (not a single call), `report.html` in the
//! run's directory, best effort: a failure to write it never changes the run. It is drawn from what
//! the run held in memory — the picture of its plan's steps, made when it started from the outline of
//! its rendered plan (what `plan.json` holds, redacted as it was), and the outlines of the records its
//! journal wrote — not from the disk, which would read the whole
//! journal and plan back; the picture is the same (`cli_report::cli_report_of_a_failing_run`). `run_report` makes the
//! report of any recorded run again (`infra report`), from what the run recorded only: its journal,
//! its `plan.json` (without it, the graph has no edges), and the tails of its failing steps' stderr,
//! read as artifacts (bounded, redacted).

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Engine, RunOutcome};
use crate::plan::Plan;
use crate::record::artifacts::{From, SCHEME};
use crate::record::evidence;
use crate::report::{View, html};

/// How much of a failing step's stderr is read for its last lines.
const TAIL_BYTES: u64 = 16 * 1024;

/// What `run_report` draws.
#[derive(Debug, Default, Clone)]
pub struct ReportOptions {
    /// Every step in the graph, even past `html::FOCUS_ABOVE`.
    pub full_graph: bool,
    /// Where the report will be: links to artifacts are relative when it is the run's directory,
    /// else absolute `file://` URLs.
    pub output: Option<PathBuf>,
}

impl Engine {
    /// The picture of a run's plan its report starts from, made when the run starts: from the
    /// outline of the rendered plan (`View::plan_outline`), masked as `plan.json` is (a copy only
    /// when a secret is known). The run holds this, not its plan.
    pub(super) fn run_plan_view(&self, rendered: &Value) -> View {
        let outline = View::plan_outline(rendered);
        let outline = if self.redactor.is_empty() {
            outline
        } else {
            self.redactor.redact_value(&outline)
        };
        View::of_run_plan(Some(&outline), false)
    }

    /// Writes `report.html` into a finished runbook run's directory. Best effort. Drawn from what
    /// the run held: the picture of the plan it was decided on (`run_plan_view`) and the outlines of
    /// the records its journal wrote (`Journal::keeping_outlines`), the same picture `run_report`
    /// draws from the disk, without reading it back.
    pub(super) fn write_report(
        &self,
        plan: &Plan,
        outcome: &RunOutcome,
        plan_view: Option<View>,
        records: Option<Vec<evidence::Record>>,
    ) {
        let (Some(mut view), Some(records)) = (plan_view, records) else {
            return;
        };
        if plan.is_call() || !outcome.dir.join("journal.jsonl").is_file() {
            return;
        }
        view.add_records(&records);
        drop(records);
        let html = self.render_report(&view, &outcome.uri_base, false, None);
        let _ = write_new(&outcome.dir.join("report.html"), html.as_bytes());
    }

    /// The report of a recorded run, from its row in the run index.
    pub fn run_report(&self, run: &Value, opts: &ReportOptions) -> io::Result<String> {
        let back = crate::store::JournalAt::of(run).read()?;
        let dir = PathBuf::from(run["dir"].as_str().unwrap_or(""));
        let plan = std::fs::read(dir.join("plan.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let uri_base = dir
            .strip_prefix(&self.config.artifacts_root)
            .ok()
            .and_then(Path::to_str)
            .map(|rel| format!("{SCHEME}{rel}"))
            .unwrap_or_default();
        let view = View::of_run(plan.as_ref(), &back.records, back.torn);
        // a report written into the run's own directory links relatively, one elsewhere absolutely
        let links_from = match opts.output.as_deref().map(Path::parent) {
            None => None,
            Some(parent) if parent == Some(dir.as_path()) => None,
            Some(_) => Some(dir.as_path()),
        };
        Ok(self.render_report(&view, &uri_base, opts.full_graph, links_from))
    }

    fn render_report(
        &self,
        view: &View,
        uri_base: &str,
        full_graph: bool,
        links_from: Option<&Path>,
    ) -> String {
        let mut extras = html::Extras {
            uri_base: uri_base.to_owned(),
            full_graph,
            link_base: links_from
                .map(|d| format!("file://{}/", html::percent(&d.to_string_lossy())))
                .unwrap_or_default(),
            ..html::Extras::default()
        };
        for i in view.failures().into_iter().take(5) {
            let s = &view.steps[i];
            if let Some(uri) = s.artifact("stderr")
                && let Ok(v) = self.read_artifact(uri, From::Tail, TAIL_BYTES)
                && let Some(text) = v["text"].as_str()
            {
                extras.tails.insert(s.id.clone(), text.to_owned());
            }
        }
        html::report(view, &extras)
    }
}

/// Writes a file through a temporary sibling, so a reader never sees half of it.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
