//! The store's side of retention (`crate::retention` decides and deletes files): which rows of the
//! run index are past the policy, deleting them, finished jobs, and `retention_pass`, the one row
//! that says when the last automatic pass started, so that passes are at most a minute apart
//! whichever process writes (`claim_pass`, one conditional update).

use rusqlite::{OptionalExtension, params};

use super::{RUN_COLUMNS, RunRow, Store, StoreError};
use crate::ctx::ProcessRef;

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS retention_pass (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    started_at TEXT NOT NULL,
    passes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_journal ON runs(journal);
";

/// A run the policy lets go: its id, directory, calls journal (if its records are in one) and
/// whether it succeeded.
#[derive(Debug, Clone)]
pub struct Expired {
    pub id: String,
    pub runbook: String,
    pub dir: String,
    pub journal: Option<String>,
    pub started_at: String,
    pub status: String,
}

/// Where a page of [`Store::expired_runs`] ended: the last row's `started_at` and `id`.
pub type After = (String, String);

/// Which runs are past the policy, as times in the index's own format (RFC 3339, UTC, so they
/// compare as text).
#[derive(Debug, Clone)]
pub struct Cutoffs {
    /// Runs that succeeded and started before this go.
    pub succeeded_before: String,
    /// Runs that did not succeed (failed, cancelled, timed out, refused, interrupted) and started
    /// before this go.
    pub failed_before: String,
    /// Runs beyond the newest `max_runs` go, whatever their age.
    pub max_runs: u64,
}

impl Store {
    /// Starts an automatic pass when the last one started at or before `due_before` (or none did):
    /// returns whether this caller won it. One conditional write, so of two processes asking at once
    /// one gets it.
    pub fn claim_pass(&self, now: &str, due_before: &str) -> Result<bool, StoreError> {
        self.with_tables(TABLES, |c| {
            c.execute(
                "INSERT INTO retention_pass(id, started_at, passes) VALUES (1, ?1, 1)
                 ON CONFLICT(id) DO UPDATE SET started_at = excluded.started_at, passes = passes + 1
                 WHERE retention_pass.started_at <= ?2",
                params![now, due_before],
            )
            .map(|n| n == 1)
        })
    }

    /// When the last automatic pass started and how many there were.
    pub fn last_pass(&self) -> Result<Option<(String, u64)>, StoreError> {
        self.with_tables(TABLES, |c| {
            c.query_row(
                "SELECT started_at, passes FROM retention_pass WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0))),
            )
            .optional()
        })
    }

    /// Up to `limit` runs past `cut`, oldest first, after the run `after` (`started_at`, `id`; for
    /// paging), leaving out runs whose owner is alive (a live run is never pruned, whatever its age).
    /// Also returns the position to go on from and whether rows remain.
    pub fn expired_runs(
        &self,
        cut: &Cutoffs,
        after: Option<&After>,
        limit: usize,
    ) -> Result<(Vec<Expired>, Option<After>), StoreError> {
        let max_runs = i64::try_from(cut.max_runs).unwrap_or(i64::MAX);
        let (a_ts, a_id) = after.cloned().unwrap_or_default();
        let rows: Vec<RunRow> = self.with_tables(TABLES, |c| {
            // the first run past the newest `max_runs` (newest first, then by id): it and every
            // run after it in that order are beyond the count
            let beyond: Option<(String, String)> = c
                .query_row(
                    "SELECT started_at, id FROM runs ORDER BY started_at DESC, id LIMIT 1 OFFSET ?1",
                    params![max_runs],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (b_ts, b_id) = beyond.unzip();
            let mut st = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE (started_at > ?1 OR (started_at = ?1 AND id > ?2))
                   AND ((status = 'succeeded' AND started_at < ?3) OR (status != 'succeeded' AND started_at < ?4)
                        OR (?5 IS NOT NULL AND (started_at < ?5 OR (started_at = ?5 AND id >= ?6))))
                 ORDER BY started_at, id LIMIT ?7"
            ))?;
            let rows = st.query_map(
                params![
                    a_ts,
                    a_id,
                    cut.succeeded_before,
                    cut.failed_before,
                    b_ts,
                    b_id,
                    limit as i64
                ],
                RunRow::read,
            )?;
            rows.collect()
        })?;
        let next = rows.last().map(|r| (r.started_at.clone(), r.id.clone()));
        let out = rows
            .into_iter()
            .filter(|r| !(r.status == "running" && r.owner.as_ref().is_some_and(ProcessRef::alive)))
            .map(|r| Expired {
                id: r.id,
                runbook: r.runbook,
                dir: r.dir,
                journal: r.journal,
                started_at: r.started_at,
                status: r.status,
            })
            .collect();
        Ok((out, next))
    }

    /// Deletes these runs' rows, in one transaction; returns the ids this call deleted (a row another
    /// pruner deleted first is not among them, so only one of the two removes its files).
    pub fn delete_runs(&self, ids: &[&str]) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let mut deleted = Vec::new();
            {
                let mut st = tx.prepare_cached("DELETE FROM runs WHERE id = ?1")?;
                for id in ids {
                    if st.execute(params![id])? == 1 {
                        deleted.push((*id).to_owned());
                    }
                }
            }
            tx.commit()?;
            Ok(deleted)
        })
    }

    /// Whether any run of the index keeps its records in this calls journal.
    pub fn journal_referenced(&self, journal: &str) -> Result<bool, StoreError> {
        self.with_tables(TABLES, |c| {
            c.prepare_cached("SELECT 1 FROM runs WHERE journal = ?1 LIMIT 1")?
                .query_row(params![journal], |_| Ok(()))
                .optional()
                .map(|r| r.is_some())
        })
    }

    /// Every run directory the index names (to tell a directory left without its row).
    pub fn run_dirs(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT dir FROM runs")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
    }

    /// How many runs of the index keep their records in this calls journal.
    pub fn journal_runs(&self, journal: &str) -> Result<u64, StoreError> {
        self.with_tables(TABLES, |c| {
            c.prepare_cached("SELECT count(*) FROM runs WHERE journal = ?1")?
                .query_row(params![journal], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
        })
    }

    /// Finished jobs created before `before`: counted, or deleted when `delete`.
    pub fn expired_jobs(&self, before: &str, delete: bool) -> Result<u64, StoreError> {
        let cond = "finished_at IS NOT NULL AND status != 'running' AND created_at < ?1";
        self.with(|c| {
            let n = if delete {
                c.execute(&format!("DELETE FROM jobs WHERE {cond}"), params![before])?
            } else {
                c.query_row(
                    &format!("SELECT count(*) FROM jobs WHERE {cond}"),
                    params![before],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| usize::try_from(n).unwrap_or(0))?
            };
            Ok(n as u64)
        })
    }
}
