//! `infra artifacts list|get|tail`: what runs wrote, read bounded and redacted.

use engine::record::artifacts::From;
use engine::run::ArtifactFilter;

use super::{OK, USAGE, engine};
use crate::render;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Artifacts, newest run first (its journal, then its files): size and URI.
    List {
        /// How many to show.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Only runs of this runbook (or single calls named so, e.g. `state.get`).
        #[arg(long)]
        runbook: Option<String>,
        /// Only the run with this id (or id prefix).
        #[arg(long)]
        run: Option<String>,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read an artifact (bounded): its text, or with `--json` the text and where it stops.
    Get {
        /// The artifact's URI (`artifact://runs/…`), as `infra artifacts list` or a run's summary shows
        /// it; a run's own URI lists what it holds, and `…/journal.jsonl` is its records.
        uri: String,
        /// The byte to start at.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// The most bytes to read.
        #[arg(long, default_value_t = 65536)]
        max_bytes: u64,
        /// Print JSON on stdout (`text`, `offset`, `bytes`, `total_bytes`, `next_offset`) instead of
        /// the text.
        #[arg(long)]
        json: bool,
    },
    /// The end of an artifact.
    Tail {
        /// The artifact's URI (`artifact://runs/…`).
        uri: String,
        /// The most bytes to read, from the end.
        #[arg(long, default_value_t = 4096)]
        max_bytes: u64,
        /// Print JSON on stdout instead of the text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: Command) -> u8 {
    let engine = engine();
    let (result, json) = match cmd {
        Command::List {
            limit,
            runbook,
            run,
            json,
        } => (
            engine
                .list_artifacts(
                    ArtifactFilter {
                        runbook: runbook.as_deref(),
                        run: run.as_deref(),
                    },
                    limit,
                )
                .map(serde_json::Value::Array)
                .map_err(|e| e.to_string()),
            json,
        ),
        Command::Get {
            uri,
            offset,
            max_bytes,
            json,
        } => (
            engine
                .read_artifact(&uri, From::Offset(offset), max_bytes)
                .map_err(|e| e.to_string()),
            json,
        ),
        Command::Tail {
            uri,
            max_bytes,
            json,
        } => (
            engine
                .read_artifact(&uri, From::Tail, max_bytes)
                .map_err(|e| e.to_string()),
            json,
        ),
    };
    match result {
        Ok(v) if json => {
            render::json(&v);
            OK
        }
        Ok(serde_json::Value::Array(rows)) => {
            let mut out = String::new();
            for r in &rows {
                out.push_str(&format!(
                    "{:>10}  {}\n",
                    r["bytes"].as_u64().unwrap_or(0),
                    r["uri"].as_str().unwrap_or("")
                ));
            }
            render::out(&out);
            if rows.is_empty() {
                render::note("no artifacts yet: runs write them (`infra run <runbook>`)\n");
            }
            OK
        }
        Ok(v) => {
            render::out(v["text"].as_str().unwrap_or(""));
            if let Some(next) = v["next_offset"].as_u64() {
                render::note(&format!(
                    "… {} of {} bytes shown; `--offset {next}` reads on\n",
                    v["bytes"], v["total_bytes"]
                ));
            }
            OK
        }
        Err(e) => {
            render::err(&format!("error: {e}\n"));
            USAGE
        }
    }
}
