//! `evidence`: recorded runs: `list` (the store's run index, newest first, optionally of one runbook) and
//! `get` (a run by id or unique prefix: its journal, read back, and its state as the store decides it,
//! the same word `infra runs` shows: finished, running or interrupted). Run directories are not shown.
//! `jobs logs` answers with [`get`] too. `prune` removes what the policy's `retention` lets go
//! (`Engine::prune_runs`; `dry_run: true` counts it, deleting nothing): refused unless the policy
//! allows `evidence.prune`'s `destructive` effect; refusals are audited.

use engine::run::Engine;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::mcp::reply::Reply;
use crate::mcp::schema::{ToolParams, opt_u64};

/// What `evidence` takes.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Params {
    pub action: Action,
    /// `get`: the run's id, or a unique prefix of it.
    #[serde(default)]
    pub run_id: String,
    /// `list`: only runs of this runbook.
    pub runbook: Option<String>,
    /// `list`: at most this many (20 by default).
    #[serde(default, deserialize_with = "opt_u64")]
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
    /// `prune`: count, delete nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What `evidence` does.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    List,
    Get,
    Prune,
}

impl ToolParams for Params {
    const TOOL: &'static str = "evidence";
}

/// Runs one `evidence` action.
pub fn call(engine: &Engine, p: &Params) -> Reply {
    match p.action {
        Action::List => list(engine, p.limit.unwrap_or(20) as usize, p.runbook.as_deref()),
        Action::Get => get(engine, &p.run_id),
        Action::Prune => match engine.prune_runs(p.dry_run, engine::run::PruneBy::Mcp) {
            Ok(out) => Reply::ok(
                format!(
                    "{} {} runs, {} bytes",
                    if p.dry_run { "would prune" } else { "pruned" },
                    out.runs,
                    out.bytes
                ),
                serde_json::to_value(&out).unwrap_or_default(),
            ),
            Err(e) => Reply::error(
                "refused",
                e,
                Some("`infra runs prune` prunes from the command line".into()),
                None,
            ),
        },
    }
}

/// The newest `limit` runs (of `runbook` only, when given).
fn list(engine: &Engine, limit: usize, runbook: Option<&str>) -> Reply {
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => return Reply::error("store_unavailable", e.to_string(), None, None),
    };
    match store.runs(if runbook.is_some() { 1000 } else { limit }) {
        Ok(mut runs) => {
            if let Some(rb) = runbook {
                runs.retain(|r| r["runbook"] == rb);
                runs.truncate(limit);
            }
            runs.iter_mut().for_each(hide_paths);
            Reply::ok(format!("{} runs", runs.len()), json!({"runs": runs}))
        }
        Err(e) => Reply::error("store_unavailable", e.to_string(), None, None),
    }
}

/// Takes the host paths out of a run's row: results name runs by id and artifacts by URI.
fn hide_paths(run: &mut Value) {
    if let Some(o) = run.as_object_mut() {
        for k in ["dir", "journal", "journal_offset"] {
            o.shift_remove(k);
        }
    }
}

/// Run `id` (or the one run its id starts with): its journal and its state.
pub fn get(engine: &Engine, id: &str) -> Reply {
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => return Reply::error("store_unavailable", e.to_string(), None, None),
    };
    let Ok(Some(run)) = store.run(id) else {
        return Reply::error(
            "not_found",
            format!("no run `{id}` (or the prefix is not unique)"),
            Some("`evidence {action: list}` shows run ids".into()),
            Some("/run_id".into()),
        );
    };
    match engine::store::JournalAt::of(&run).read() {
        Ok(back) => {
            // the store decides a run's state (the same word `infra runs` shows)
            let mut run = run;
            let state = run["state"].clone();
            hide_paths(&mut run);
            Reply::ok(
                format!(
                    "{} records, {}",
                    back.records.len(),
                    state.as_str().unwrap_or("")
                ),
                json!({"run": run, "state": state, "torn": back.torn, "records": back.records}),
            )
        }
        Err(e) => Reply::error(
            "not_found",
            format!("cannot read the journal: {e}"),
            None,
            None,
        ),
    }
}
