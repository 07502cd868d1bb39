//! Ids by prefix: what a front end needs to accept `3f2a` for a run or a job and to name the
//! candidates when a prefix is not unique.

use rusqlite::params;

use super::{Store, StoreError};

/// The kinds of record whose ids a person types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Run,
    Job,
}

impl Store {
    /// Ids of `kind` that start with `prefix` (in id order, at most `limit`), each with its runbook (a
    /// run) or `tool.action` (a job) and when it started, to tell candidates apart.
    pub fn ids_with_prefix(
        &self,
        kind: IdKind,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let sql = match kind {
            IdKind::Run => {
                "SELECT id, runbook, started_at FROM runs WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT ?2"
            }
            IdKind::Job => {
                "SELECT id, tool || '.' || action, created_at FROM jobs WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT ?2"
            }
        };
        self.with(|c| {
            let mut st = c.prepare(sql)?;
            let rows = st.query_map(params![prefix, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect()
        })
    }
}
