//! `infra runs logs <id> [--step S] [--follow]`: a run's step output (the `stdout` and `stderr`
//! artifacts its steps wrote, already redacted as they were written), in the order the steps started.
//! Several sources are shown as `tail` shows several files: a `==> step/stream <==` line before each.
//! `--follow` polls the files and the run's journal until the run has ended.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use engine::record::artifacts::{self, SCHEME};
use engine::record::evidence::Record;
use engine::store::JournalAt;
use engine::store::Store;

use super::{FAILED, OK, USAGE, config};
use crate::render;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's id, or any unique prefix of it (`infra runs list` shows them).
    id: String,
    /// Only this step's output (a `foreach` step's items are `STEP/0`, `STEP/1`, …; `STEP` shows all).
    #[arg(long, value_name = "STEP")]
    step: Option<String>,
    /// Keep printing output as the run writes it, until the run ends (Ctrl-C stops following).
    #[arg(short, long)]
    follow: bool,
}

/// How often `--follow` looks for more output.
const POLL: Duration = Duration::from_millis(200);
/// The most bytes read from one source at a time.
const CHUNK: u64 = 64 * 1024;
const STREAMS: [&str; 2] = ["stdout", "stderr"];

/// One output file of a step: `step[/index]` and `stdout` or `stderr`, and how much of it is shown.
#[derive(Debug)]
struct Source {
    step: String,
    stream: &'static str,
    shown: u64,
}

impl Source {
    fn label(&self) -> String {
        format!("{}/{}", self.step, self.stream)
    }
}

/// Steps (`step` or `step/index`) in the order they first started, from the run's journal.
fn steps_started(journal: &JournalAt) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    if let Ok(back) = journal.read() {
        for r in back.records {
            if let Record::NodeStarted { step, index, .. } = r {
                let name = match index {
                    Some(i) => format!("{step}/{i}"),
                    None => step,
                };
                if !seen.contains(&name) {
                    seen.push(name);
                }
            }
        }
    }
    seen
}

fn wanted(step: &str, filter: Option<&str>) -> bool {
    match filter {
        None => true,
        Some(f) => step == f || step.strip_prefix(f).is_some_and(|r| r.starts_with('/')),
    }
}

pub fn run(store: &Store, args: Args) -> u8 {
    let row = match super::ids::run_row(store, &args.id) {
        Ok(row) => row,
        Err(code) => return code,
    };
    let id = row["run_id"]
        .as_str()
        .or_else(|| row["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let dir = PathBuf::from(row["dir"].as_str().unwrap_or_default());
    let journal = JournalAt::of(&row);
    let root = config().artifacts_root;
    let Some(base) = dir
        .strip_prefix(&root)
        .ok()
        .map(|rel| format!("{SCHEME}{}", rel.display()))
    else {
        render::err(&format!(
            "error: the run's directory `{}` is not under the artifacts root `{}`; was `MCP_PROFILES_DIR` \
             different when it ran?\n",
            dir.display(),
            root.display()
        ));
        return FAILED;
    };
    let filter = args.step.as_deref();
    let mut sources: Vec<Source> = Vec::new();
    let mut last: Option<String> = None;
    let mut printed = false;
    loop {
        // read the state before the output: output written before the run ended is then always read
        let running = args.follow
            && store
                .run(&id)
                .ok()
                .flatten()
                .is_some_and(|r| r["state"] == "running");
        for step in steps_started(&journal) {
            if !wanted(&step, filter) {
                continue;
            }
            for stream in STREAMS {
                if !sources.iter().any(|s| s.step == step && s.stream == stream) {
                    sources.push(Source {
                        step: step.clone(),
                        stream,
                        shown: 0,
                    });
                }
            }
        }
        for s in &mut sources {
            let uri = format!("{base}/{}/{}", s.step, s.stream);
            let Ok(mut f) = artifacts::open(&root, &uri) else {
                continue;
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < s.shown {
                // a retry started the file again
                s.shown = 0;
            }
            while s.shown < len {
                let mut buf = Vec::new();
                if f.seek(SeekFrom::Start(s.shown)).is_err()
                    || (&mut f).take(CHUNK).read_to_end(&mut buf).is_err()
                    || buf.is_empty()
                {
                    break;
                }
                if last.as_deref() != Some(&s.label()) {
                    let head = format!("==> {} <==", s.label());
                    render::out(&format!(
                        "{}{}\n",
                        if printed { "\n" } else { "" },
                        render::paint(&head, render::Paint::Bold, render::Stream::Out)
                    ));
                    last = Some(s.label());
                }
                render::out(&String::from_utf8_lossy(&buf));
                s.shown += buf.len() as u64;
                printed = true;
            }
        }
        if !running {
            break;
        }
        std::thread::sleep(POLL);
    }
    if !printed {
        let all = steps_started(&journal);
        match filter {
            Some(f) if !all.iter().any(|s| wanted(s, Some(f))) => {
                render::err(&format!(
                    "error: run {id} has no step `{f}`; its steps are: {}\n",
                    if all.is_empty() {
                        "(none started)".to_owned()
                    } else {
                        all.join(", ")
                    }
                ));
                return USAGE;
            }
            _ => render::note(&format!("run {id} wrote no step output\n")),
        }
    }
    OK
}
