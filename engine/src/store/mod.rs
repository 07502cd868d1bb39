//! The embedded store: `store.sqlite3` in the profiles directory.
//!
//! SQLite in WAL mode with a 10 s busy timeout, one connection behind a mutex, so two `infra` processes (an MCP server and a CLI) on the same directory see each other's
//! writes and lose none (`two_connections_lose_no_writes`). Tables: `state` (the persistent scope,
//! stored redacted by the caller), `runs` (the run index: id, runbook, directory, times, status,
//! owner pid and start time, and for a single call the calls journal and offset holding its
//! records, read back through `JournalAt`; `resumed_from`, the run a resumed run resumes), `jobs` (id,
//! tool, action, status, owner, times, result; for a worker's job its heartbeat, a cancel request, its
//! run, a detached remote command) and
//! `audit_head` (one row: seq, hash, ts; `audit_head_keep` moves it only forward). The connection
//! stays at `synchronous=NORMAL`: writes that need not survive a power loss (the audit head; the run
//! index of runs that change nothing) are left in the WAL (other processes see them, a crash keeps
//! them), the next synced write carrying them; a durable write (`with_sync(true, …)`: state, jobs,
//! the index of runs that can write) raises it to `FULL` for its own transaction. Columns added later are added to older
//! stores on open (`add_column`). A single read's row (`run_whole`) is queued and written by the
//! store's index writer thread, several in one transaction when they queue up (`Deferred`); every
//! other use of the connection in this process writes the queue first, so it never reads an index
//! without its own rows.
//!
//! `run_status` is the one place a run's status is decided, for `infra runs` and MCP `evidence`
//! alike: a `running` row stays `running` while its owner lives (`ctx::ProcessRef::alive`:
//! `/proc/<pid>` exists, is not a zombie, and started when the recorded process did; Linux only);
//! once it is gone, the journal's `run_finished` status, else `interrupted`, never written back. A
//! `running` job whose owner (its worker) is gone reads back as `interrupted` the same way; where
//! `/proc` cannot tell, a heartbeat older than `HEARTBEAT_STALE` says it is gone. A worker claims its
//! job (`job_claim`: once, only from its starter), beats and polls for a cancel (`job_beat`); any
//! process may ask a cancel (`job_request_cancel`). `LazyStore` opens
//! the store on first use and is shared by the engine and its audit log (`HeadKeeper`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

mod ids;
mod retention;

pub use ids::IdKind;
pub use retention::{Cutoffs, Expired};

use crate::ctx::ProcessRef;
use crate::record::audit::{Head, HeadKeeper};
use crate::record::evidence::{Journal, ReadBack};

/// A store error.
#[derive(Debug, thiserror::Error)]
#[error("the store `{path}`: {message}")]
pub struct StoreError {
    pub path: String,
    pub message: String,
}

/// An open store. Cheap to share behind an `Arc`; one connection, serialised by a mutex.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// Index rows of single reads (`run_whole`) not yet in `runs`: see [`Deferred`].
    deferred: Arc<Deferred>,
}

/// Index rows written off the caller's thread. `run_whole` queues its row and wakes the store's
/// index writer (one thread per store, started by the first row), which takes every queued row under
/// the connection's lock and writes them in one transaction: a single call does not wait for
/// SQLite, and rows that queue while a transaction is written share the next one (group commit).
/// Every other use of the connection (`Store::with`) first writes what is queued, under the same
/// lock, so this process never reads an index without a row it queued; another process sees a row
/// once its transaction is written, at once unless the writer is busy. Dropping the store writes
/// what is left. A row that a `kill -9` catches queued is lost from the index only: the call's
/// journal and audit records are already written (the index is best effort once a run started).
#[derive(Debug, Default)]
struct Deferred {
    queue: Mutex<Queue>,
    ready: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    rows: Vec<WholeRun>,
    /// Whether the writer thread runs (or could not be started: `false` again, rows written inline).
    writer: bool,
    /// The store is being dropped: the writer ends once the queue is empty.
    closed: bool,
}

/// One `runs` row, whole.
#[derive(Debug)]
struct WholeRun {
    id: String,
    runbook: String,
    dir: String,
    started_at: String,
    finished_at: String,
    status: String,
    owner: ProcessRef,
    journal: String,
    offset: i64,
}

impl Deferred {
    fn take(&self) -> Vec<WholeRun> {
        let mut q = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut q.rows)
    }
}

/// Writes queued rows, several in one transaction. A failed write loses those rows from the index
/// only (best effort, like every index write of a run that started).
fn write_rows(c: &Connection, rows: Vec<WholeRun>) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let many = rows.len() > 1;
    if many {
        c.execute_batch("BEGIN IMMEDIATE")?;
    }
    let written = (|| {
        let mut st = c.prepare_cached(
            "INSERT INTO runs(id, runbook, dir, started_at, finished_at, status, owner_pid, owner_start, journal, journal_offset) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for r in &rows {
            st.execute(params![
                r.id,
                r.runbook,
                r.dir,
                r.started_at,
                r.finished_at,
                r.status,
                r.owner.pid,
                r.owner.start,
                r.journal,
                r.offset
            ])?;
        }
        Ok(())
    })();
    if many {
        // a COMMIT that fails leaves the transaction open: it is rolled back, or every later use of
        // the shared connection would run inside it
        let ended = written.and_then(|()| c.execute_batch("COMMIT"));
        if ended.is_err() && !c.is_autocommit() {
            let _ = c.execute_batch("ROLLBACK");
        }
        return ended;
    }
    written
}

impl Drop for Store {
    fn drop(&mut self) {
        {
            let mut q = self
                .deferred
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            q.closed = true;
        }
        self.deferred.ready.notify_all();
        if let Ok(c) = self.conn.lock() {
            let _ = write_rows(&c, self.deferred.take());
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY NOT NULL,
    runbook TEXT NOT NULL,
    dir TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    owner_pid INTEGER,
    owner_start INTEGER,
    journal TEXT,
    journal_offset INTEGER
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_at);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY NOT NULL,
    tool TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    owner_pid INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    result TEXT,
    owner_start INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
CREATE TABLE IF NOT EXISTS audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    ts TEXT NOT NULL
);
";

impl Store {
    /// Opens (and creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let conn = Connection::open(path).map_err(|e| err(&e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| err(&e))?;
        // switching a new file to WAL, or creating its tables, while another process does the same can
        // answer "database is locked" at once (SQLite does not wait for those locks): try again, bounded
        let started = Instant::now();
        loop {
            match init(&conn) {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if matches!(
                        f.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && started.elapsed() < Duration::from_secs(10) =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(err(&e)),
            }
        }
        Ok(Store {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
            deferred: Arc::default(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.conn.lock().map_err(|_| self.err("lock poisoned"))?;
        // the index rows this process queued come first: nothing here reads an index without them
        let _ = write_rows(&conn, self.deferred.take());
        f(&conn).map_err(|e| self.err(e))
    }

    /// Writes the index rows this process queued (before an exit that skips `Drop`: a signal).
    pub fn flush(&self) {
        let _ = self.with(|_| Ok(()));
    }

    /// [`with`](Self::with) for what does not read the run index (state reads, the audit head): the
    /// queued index rows stay with the writer.
    fn with_unindexed<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().map_err(|_| self.err("lock poisoned"))?;
        f(&conn).map_err(|e| self.err(e))
    }

    /// Queues a whole row for the index writer (started on the first row); where no thread can be
    /// started, the row is written at once.
    fn defer(&self, row: WholeRun) -> Result<(), StoreError> {
        let mut q = self
            .deferred
            .queue
            .lock()
            .map_err(|_| self.err("lock poisoned"))?;
        q.rows.push(row);
        if q.writer {
            drop(q);
            self.deferred.ready.notify_one();
            return Ok(());
        }
        let (conn, deferred) = (Arc::clone(&self.conn), Arc::clone(&self.deferred));
        let started = std::thread::Builder::new()
            .name("store-index".into())
            .spawn(move || index_writer(&conn, &deferred))
            .is_ok();
        q.writer = started;
        drop(q);
        if started {
            self.deferred.ready.notify_one();
            Ok(())
        } else {
            self.with(|_| Ok(()))
        }
    }

    /// Runs `f` once `tables` exist (a module's own tables, made on first use: `approval.rs`).
    pub(crate) fn with_tables<T>(
        &self,
        tables: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.with(|c| {
            c.execute_batch(tables)?;
            f(c)
        })
    }

    pub fn state_set(&self, key: &str, value: &Value) -> Result<(), StoreError> {
        let text = value.to_string();
        let now = crate::ctx::now_rfc3339();
        self.with_sync(true, |c| {
            c.prepare_cached(
                "INSERT INTO state(key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )?
            .execute(params![key, text, now])
            .map(|_| ())
        })
    }

    pub fn state_get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let text: Option<String> = self.with_unindexed(|c| {
            c.prepare_cached("SELECT value FROM state WHERE key = ?1")?
                .query_row(params![key], |r| r.get(0))
                .optional()
        })?;
        Ok(text.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t))))
    }

    /// Removes a key; returns whether it existed.
    pub fn state_unset(&self, key: &str) -> Result<bool, StoreError> {
        self.with_sync(true, |c| {
            c.prepare_cached("DELETE FROM state WHERE key = ?1")?
                .execute(params![key])
                .map(|n| n > 0)
        })
    }

    /// Keys (and values) starting with `prefix`, in key order.
    pub fn state_list(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        let rows: Vec<(String, String)> = self.with_unindexed(|c| {
            let mut st = c.prepare_cached(
                "SELECT key, value FROM state WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key LIMIT ?2",
            )?;
            let rows = st.query_map(params![prefix, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        Ok(rows
            .into_iter()
            .map(|(k, t)| {
                let v = serde_json::from_str(&t).unwrap_or(Value::String(t));
                (k, v)
            })
            .collect())
    }

    /// Records that a run started, in this process: its directory, and the journal that holds its
    /// records (`None`: `journal.jsonl` in its directory) with the offset of its first record.
    pub fn run_started(
        &self,
        id: &str,
        runbook: &str,
        dir: &Path,
        journal: Option<&Journal>,
        started_at: &str,
        durable: bool,
    ) -> Result<(), StoreError> {
        let dir = dir.display().to_string();
        let me = ProcessRef::current();
        let (path, start) = match journal {
            Some(j) => (
                Some(j.path().display().to_string()),
                Some(i64::try_from(j.start()).unwrap_or(i64::MAX)),
            ),
            None => (None, None),
        };
        self.with_sync(durable, |c| {
            c.prepare_cached(
                "INSERT INTO runs(id, runbook, dir, started_at, status, owner_pid, owner_start, journal, journal_offset) VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8)",
            )?
            .execute(params![id, runbook, dir, started_at, me.pid, me.start, path, start])
            .map(|_| ())
        })
    }

    /// Records a whole run at once, as it ended: a single call that only reads, whose row is written
    /// once at its end (`execute.rs`) rather than started and then finished.
    /// The row is written by the store's index writer ([`Deferred`]), not on the caller's thread.
    #[allow(clippy::too_many_arguments)]
    pub fn run_whole(
        &self,
        id: &str,
        runbook: &str,
        dir: &Path,
        journal: &Journal,
        started_at: &str,
        status: &str,
    ) -> Result<(), StoreError> {
        self.defer(WholeRun {
            id: id.to_owned(),
            runbook: runbook.to_owned(),
            dir: dir.display().to_string(),
            started_at: started_at.to_owned(),
            finished_at: crate::ctx::now_rfc3339(),
            status: status.to_owned(),
            owner: ProcessRef::current(),
            journal: journal.path().display().to_string(),
            offset: i64::try_from(journal.start()).unwrap_or(i64::MAX),
        })
    }

    /// Records that a run resumes `from` (`infra run --resume`).
    pub fn run_resumed(&self, id: &str, from: &str, durable: bool) -> Result<(), StoreError> {
        self.with_sync(durable, |c| {
            c.prepare_cached("UPDATE runs SET resumed_from = ?2 WHERE id = ?1")?
                .execute(params![id, from])
                .map(|_| ())
        })
    }

    /// Records how a run ended.
    pub fn run_finished(&self, id: &str, status: &str, durable: bool) -> Result<(), StoreError> {
        let now = crate::ctx::now_rfc3339();
        self.with_sync(durable, |c| {
            c.prepare_cached("UPDATE runs SET finished_at = ?2, status = ?3 WHERE id = ?1")?
                .execute(params![id, now, status])
                .map(|_| ())
        })
    }

    /// Runs `f` with the store's writes forced to disk (`durable`), or left in the WAL, which other
    /// processes see at once and a process crash keeps; only a power loss can take them back, and the
    /// next synced write carries them. The connection stays at `synchronous = NORMAL`, the setting of
    /// the many writes that change nothing (a read's run index, audit heads); a durable write raises it
    /// for its own transaction.
    fn with_sync<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        if !durable {
            return self.with(f);
        }
        self.with(|c| {
            c.execute_batch("PRAGMA synchronous = FULL")?;
            let r = f(c);
            c.execute_batch("PRAGMA synchronous = NORMAL")?;
            r
        })
    }

    /// Recent runs, newest first, each with its status and state as [`run_status`] decides them.
    pub fn runs(&self, limit: usize) -> Result<Vec<Value>, StoreError> {
        let rows: Vec<RunRow> = self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, id LIMIT ?1"
            ))?;
            let rows = st.query_map(params![limit as i64], RunRow::read)?;
            rows.collect()
        })?;
        Ok(rows.into_iter().map(RunRow::into_json).collect())
    }

    /// Recent runs of `runbook` (any, when `None`) whose id starts with `id_prefix` (any, when empty),
    /// newest first.
    pub fn runs_of(
        &self,
        runbook: Option<&str>,
        id_prefix: &str,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError> {
        let rows: Vec<RunRow> = self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR runbook = ?1)
                 AND substr(id, 1, length(?2)) = ?2 ORDER BY started_at DESC, id LIMIT ?3"
            ))?;
            let rows = st.query_map(params![runbook, id_prefix, limit as i64], RunRow::read)?;
            rows.collect()
        })?;
        Ok(rows.into_iter().map(RunRow::into_json).collect())
    }

    /// The run whose directory is `runs/<runbook>/<name>` (`name` is `<stamp>-<first 8 of the id>`),
    /// whatever root it was recorded under.
    pub fn run_named(&self, runbook: &str, name: &str) -> Result<Option<Value>, StoreError> {
        let Some((_, prefix)) = name.rsplit_once('-') else {
            return Ok(None);
        };
        let tail = format!("/runs/{runbook}/{name}");
        let mut found: Vec<RunRow> = self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE substr(id, 1, length(?1)) = ?1
                 AND runbook = ?2 AND substr(dir, length(dir) - length(?3) + 1) = ?3 LIMIT 2"
            ))?;
            let rows = st.query_map(params![prefix, runbook, tail], RunRow::read)?;
            rows.collect()
        })?;
        Ok(if found.len() == 1 {
            found.pop().map(RunRow::into_json)
        } else {
            None
        })
    }

    /// One run by id or unique id prefix, with its status and state as [`run_status`] decides them.
    pub fn run(&self, id: &str) -> Result<Option<Value>, StoreError> {
        let mut found: Vec<RunRow> = self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE substr(id, 1, length(?1)) = ?1 LIMIT 2"
            ))?;
            let rows = st.query_map(params![id], RunRow::read)?;
            rows.collect()
        })?;
        Ok(if found.len() == 1 {
            found.pop().map(RunRow::into_json)
        } else {
            None
        })
    }
}

/// Puts a store's file in WAL mode and makes its tables, adding the columns older versions lacked.
fn init(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    // stores made before runs and jobs named their owner's start time (and runs their owner), and
    // before runs could share a journal
    for (table, column, kind) in [
        ("runs", "owner_pid", "INTEGER"),
        ("runs", "owner_start", "INTEGER"),
        ("jobs", "owner_start", "INTEGER"),
        ("runs", "journal", "TEXT"),
        ("runs", "journal_offset", "INTEGER"),
        ("runs", "resumed_from", "TEXT"),
        // durable jobs: the worker's heartbeat (ms since the epoch; set when it claims the row), a
        // cancel asked by any process, the run it is in, and a detached remote command
        ("jobs", "heartbeat_ms", "INTEGER"),
        ("jobs", "cancel_requested", "TEXT"),
        ("jobs", "run_id", "TEXT"),
        ("jobs", "run_dir", "TEXT"),
        ("jobs", "uri_base", "TEXT"),
        ("jobs", "remote", "TEXT"),
    ] {
        add_column(conn, table, column, kind)?;
    }
    Ok(())
}

/// Adds a nullable column to a table made by an older version, when it is missing.
fn add_column(c: &Connection, table: &str, column: &str, kind: &str) -> rusqlite::Result<()> {
    let mut st = c.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let names = st.query_map([], |r| r.get::<_, String>(0))?;
    for n in names {
        if n? == column {
            return Ok(());
        }
    }
    match c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}")) {
        // another process opening the same store added it between the check and here
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("duplicate column name") => {
            Ok(())
        }
        r => r,
    }
}

const RUN_COLUMNS: &str = "id, runbook, dir, started_at, finished_at, status, owner_pid, owner_start, journal, journal_offset, resumed_from";

/// A row of the run index, as stored.
struct RunRow {
    id: String,
    runbook: String,
    dir: String,
    started_at: String,
    finished_at: Option<String>,
    status: String,
    owner: Option<ProcessRef>,
    journal: Option<String>,
    journal_offset: Option<i64>,
    resumed_from: Option<String>,
}

impl RunRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(RunRow {
            id: r.get(0)?,
            runbook: r.get(1)?,
            dir: r.get(2)?,
            started_at: r.get(3)?,
            finished_at: r.get(4)?,
            status: r.get(5)?,
            owner: r.get::<_, Option<i64>>(6)?.map(|pid| ProcessRef {
                pid,
                start: r.get(7).ok().flatten(),
            }),
            journal: r.get(8)?,
            journal_offset: r.get(9)?,
            resumed_from: r.get(10)?,
        })
    }

    fn into_json(self) -> Value {
        let shared = self.journal.as_ref().map(|j| {
            (
                j.clone(),
                self.journal_offset
                    .and_then(|o| u64::try_from(o).ok())
                    .unwrap_or(0),
            )
        });
        let at = JournalAt::new(&self.id, &self.dir, shared.clone());
        let status = run_status(&self.status, self.owner.as_ref(), &at);
        let state = match status.as_str() {
            "running" => "running",
            "interrupted" => "interrupted",
            _ => "finished",
        };
        let mut v = json!({
            "id": self.id,
            "runbook": self.runbook,
            "dir": self.dir,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": status,
            "state": state,
        });
        if let (Some((journal, offset)), Some(o)) = (shared, v.as_object_mut()) {
            o.insert("journal".into(), journal.into());
            o.insert("journal_offset".into(), offset.into());
        }
        if let (Some(from), Some(o)) = (self.resumed_from, v.as_object_mut()) {
            o.insert("resumed_from".into(), from.into());
        }
        v
    }
}

/// Where a run's records are: `journal.jsonl` in its directory, or its part of a calls journal
/// (the file, the offset of its first record, and its id to tell its records from the others').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalAt {
    pub path: PathBuf,
    pub shared: Option<(u64, String)>,
}

impl JournalAt {
    fn new(id: &str, dir: &str, shared: Option<(String, u64)>) -> JournalAt {
        match shared {
            Some((path, start)) => JournalAt {
                path: PathBuf::from(path),
                shared: Some((start, id.to_owned())),
            },
            None => JournalAt {
                path: Path::new(dir).join("journal.jsonl"),
                shared: None,
            },
        }
    }

    /// Where the records of a run of the index are, from its row as [`Store::run`] gives it.
    pub fn of(run: &Value) -> JournalAt {
        let s = |k: &str| run.get(k).and_then(Value::as_str).unwrap_or_default();
        let shared = run
            .get("journal")
            .and_then(Value::as_str)
            .map(|j| (j.to_owned(), run["journal_offset"].as_u64().unwrap_or(0)));
        JournalAt::new(s("id"), s("dir"), shared)
    }

    /// The run's records.
    pub fn read(&self) -> std::io::Result<ReadBack> {
        match &self.shared {
            Some((start, id)) => crate::record::evidence::read_run(&self.path, *start, id),
            None => crate::record::evidence::read(&self.path),
        }
    }
}

/// A run's status, for every reader (`infra runs`, MCP `evidence`): the run index's word, unless that is
/// still `running`. Then the run is running while the process that runs it is alive; once that process is
/// gone, the journal decides: its `run_finished` record's status (the index missed the end), or
/// `interrupted` when it has none (the process was killed mid-run). A row without an owner (made by an
/// older version) is decided by its journal alone. Nothing is written back.
pub fn run_status(indexed: &str, owner: Option<&ProcessRef>, journal: &JournalAt) -> String {
    if indexed != "running" || owner.is_some_and(ProcessRef::alive) {
        return indexed.to_owned();
    }
    let finished = journal.read().ok().and_then(|back| {
        back.records.into_iter().rev().find_map(|r| match r {
            crate::record::evidence::Record::RunFinished { status, .. } => Some(status),
            _ => None,
        })
    });
    finished.map_or("interrupted", |s| s.as_str()).to_owned()
}

impl Store {
    /// Keeps the audit log's head: one row, only ever moved forward (a log that was cut, emptied or
    /// started again from record 1 does not pull it back). The write is not forced to disk: SQLite's
    /// WAL holds it (other processes see it at once) until the store's next synced write or
    /// checkpoint. The log syncs its file before it hands a head here (`HeadKeeper`), so whenever
    /// this row reaches the disk, the record it names is there already: a power loss can take the
    /// head back (which `verify` reports as records past the head, not missing), never ahead of the
    /// log.
    pub fn audit_head_keep(&self, head: &Head) -> Result<(), StoreError> {
        let seq = i64::try_from(head.seq).unwrap_or(i64::MAX);
        self.with_unindexed(|c| {
            c.prepare_cached(
                "INSERT INTO audit_head(id, seq, hash, ts) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, ts = excluded.ts
                 WHERE excluded.seq > audit_head.seq",
            )?
            .execute(params![seq, head.hash, head.ts])
            .map(|_| ())
        })
    }

    /// The audit log's head as last kept, if any.
    pub fn audit_head(&self) -> Result<Option<Head>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT seq, hash, ts FROM audit_head WHERE id = 1",
                [],
                |r| {
                    Ok(Head {
                        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        hash: r.get(1)?,
                        ts: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    /// How many runs the index lists.
    pub fn runs_count(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            c.query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
        })
    }
}

/// The store of a profiles directory, opened on first use and shared: the engine's, and the one the
/// audit log keeps its head in.
#[derive(Debug)]
pub struct LazyStore {
    path: PathBuf,
    cell: OnceLock<Result<Arc<Store>, StoreError>>,
    /// When this process last wrote an audit head (heads are written in groups).
    head_written: Mutex<Option<Instant>>,
    /// How long a head may wait (`HEAD_INTERVAL`).
    interval: Duration,
}

/// The longest an audit head of a record that changed nothing waits before it is written to the store.
pub const HEAD_INTERVAL: Duration = Duration::from_millis(50);

impl LazyStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LazyStore {
            path: path.into(),
            cell: OnceLock::new(),
            head_written: Mutex::new(None),
            interval: HEAD_INTERVAL,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store if this process opened it (nothing is created).
    pub fn opened(&self) -> Option<&Store> {
        self.cell.get().and_then(|r| r.as_deref().ok())
    }

    /// The store, opened (and created) on first use; an error is kept and given again.
    pub fn get(&self) -> Result<&Store, StoreError> {
        match self
            .cell
            .get_or_init(|| Store::open(&self.path).map(Arc::new))
        {
            Ok(s) => Ok(s),
            Err(e) => Err(StoreError {
                path: e.path.clone(),
                message: e.message.clone(),
            }),
        }
    }
}

/// Heads of durable records (intents, writes' starts and ends) are written at once; the others at
/// most `HEAD_INTERVAL` apart (`due`): the log keeps the last one waiting and hands it over, its
/// file synced, at the next due head, when it is flushed (`Audit::flush_head`) or dropped. A head
/// that lags only lets `verify` see records past it, never a false alarm.
impl HeadKeeper for LazyStore {
    fn due(&self) -> bool {
        self.head_written
            .lock()
            .map(|t| t.is_none_or(|t| t.elapsed() >= self.interval))
            .unwrap_or(true)
    }

    fn keep(&self, head: &Head) {
        if let Ok(mut t) = self.head_written.lock() {
            *t = Some(Instant::now());
        }
        if let Ok(s) = self.get() {
            let _ = s.audit_head_keep(head);
        }
    }
}

/// The index writer of one store: waits for queued rows, then writes all there are, under the
/// connection's lock, in one transaction; ends once the store is dropped and nothing is queued.
fn index_writer(conn: &Mutex<Connection>, deferred: &Deferred) {
    loop {
        {
            let mut q = deferred
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while q.rows.is_empty() && !q.closed {
                q = deferred
                    .ready
                    .wait(q)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if q.rows.is_empty() {
                return;
            }
        }
        let Ok(c) = conn.lock() else { return };
        let _ = write_rows(&c, deferred.take());
    }
}

/// The columns `job_row` reads, in its order.
const JOB_COLUMNS: &str = "id, tool, action, status, owner_pid, created_at, finished_at, result, owner_start, heartbeat_ms, cancel_requested, run_id, run_dir, uri_base, remote";

/// How long a worker's heartbeat stays fresh where `/proc` cannot tell whether it lives.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(15);

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether the process that owns a `running` job is gone: its pid no longer runs the process that
/// started then (`ProcessRef::alive`); where `/proc` cannot tell, its heartbeat is stale or missing.
fn job_owner_gone(owner: &ProcessRef, heartbeat_ms: Option<i64>) -> bool {
    if ProcessRef::observable() {
        return !owner.alive();
    }
    let stale = i64::try_from(HEARTBEAT_STALE.as_millis()).unwrap_or(i64::MAX);
    heartbeat_ms.is_none_or(|h| now_ms().saturating_sub(h) > stale)
}

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let status: String = r.get(3)?;
    let owner = ProcessRef {
        pid: r.get(4)?,
        start: r.get(8)?,
    };
    let heartbeat: Option<i64> = r.get(9)?;
    let remote: Option<String> = r.get(14)?;
    // a detached remote command has no owner here: its status is the target's (`ssh::detach`)
    let status = if status == "running" && remote.is_none() && job_owner_gone(&owner, heartbeat) {
        "interrupted".to_owned()
    } else {
        status
    };
    let result: Option<String> = r.get(7)?;
    let mut v = json!({
        "job_id": r.get::<_, String>(0)?,
        "tool": r.get::<_, String>(1)?,
        "action": r.get::<_, String>(2)?,
        "status": status,
        "created_at": r.get::<_, String>(5)?,
        "finished_at": r.get::<_, Option<String>>(6)?,
        "result": result.and_then(|t| serde_json::from_str::<Value>(&t).ok()),
        "pid": owner.pid,
    });
    let Some(o) = v.as_object_mut() else {
        return Ok(v);
    };
    if let Some(h) = heartbeat.and_then(chrono::DateTime::from_timestamp_millis) {
        o.insert(
            "heartbeat_at".into(),
            h.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
    }
    if let Some(c) = r.get::<_, Option<String>>(10)? {
        o.insert("cancel_requested_at".into(), c.into());
    }
    if let Some(run) = r.get::<_, Option<String>>(11)? {
        o.insert(
            "run".into(),
            json!({"run_id": run, "dir": r.get::<_, Option<String>>(12)?, "uri_base": r.get::<_, Option<String>>(13)?}),
        );
    }
    if let Some(remote) = remote.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
        o.insert("remote".into(), remote);
    }
    Ok(v)
}

impl Store {
    /// Records a job started by this process.
    pub fn job_started(&self, id: &str, tool: &str, action: &str) -> Result<(), StoreError> {
        let now = crate::ctx::now_rfc3339();
        let me = ProcessRef::current();
        self.with_sync(true, |c| {
            c.execute(
                "INSERT INTO jobs(id, tool, action, status, owner_pid, created_at, owner_start) VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6)",
                params![id, tool, action, me.pid, now, me.start],
            )
            .map(|_| ())
        })
    }

    /// Hands a job not yet claimed to the worker process `owner` (its starter, once it spawned it).
    pub fn job_owner(&self, id: &str, owner: &ProcessRef) -> Result<(), StoreError> {
        self.with_sync(true, |c| {
            c.execute(
                "UPDATE jobs SET owner_pid = ?2, owner_start = ?3 WHERE id = ?1 AND status = 'running' AND heartbeat_ms IS NULL",
                params![id, owner.pid, owner.start],
            )
            .map(|_| ())
        })
    }

    /// Claims job `id` for this process, its worker: only a running job no worker claimed yet, whose
    /// owner is this process or `starter` (the process that started it, before it named its worker).
    /// `false` when the job is not this process's to run.
    pub fn job_claim(&self, id: &str, starter: i64) -> Result<bool, StoreError> {
        let me = ProcessRef::current();
        let now = now_ms();
        self.with_sync(true, |c| {
            c.execute(
                "UPDATE jobs SET owner_pid = ?2, owner_start = ?3, heartbeat_ms = ?4 WHERE id = ?1 AND status = 'running' AND heartbeat_ms IS NULL AND owner_pid IN (?2, ?5)",
                params![id, me.pid, me.start, now, starter],
            )
            .map(|n| n == 1)
        })
    }

    /// A worker's heartbeat; answers whether a cancel of the job was asked.
    pub fn job_beat(&self, id: &str, beat: bool) -> Result<bool, StoreError> {
        let now = now_ms();
        self.with(|c| {
            if beat {
                c.prepare_cached("UPDATE jobs SET heartbeat_ms = ?2 WHERE id = ?1")?
                    .execute(params![id, now])?;
            }
            c.prepare_cached("SELECT cancel_requested IS NOT NULL FROM jobs WHERE id = ?1")?
                .query_row(params![id], |r| r.get::<_, bool>(0))
                .optional()
                .map(|c| c.unwrap_or(false))
        })
    }

    /// Asks the worker of running job `id` to cancel it; `false` when the job is not running.
    pub fn job_request_cancel(&self, id: &str) -> Result<bool, StoreError> {
        let now = crate::ctx::now_rfc3339();
        self.with_sync(true, |c| {
            c.execute(
                "UPDATE jobs SET cancel_requested = coalesce(cancel_requested, ?2) WHERE id = ?1 AND status = 'running'",
                params![id, now],
            )
            .map(|n| n == 1)
        })
    }

    /// Records the run a job is in, once it started one (so any process can show its output).
    pub fn job_run(
        &self,
        id: &str,
        run_id: &str,
        dir: &Path,
        uri_base: &str,
    ) -> Result<(), StoreError> {
        let dir = dir.display().to_string();
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET run_id = ?2, run_dir = ?3, uri_base = ?4 WHERE id = ?1",
                params![id, run_id, dir, uri_base],
            )
            .map(|_| ())
        })
    }

    /// Records a job that is a detached remote command (`remote`: where it keeps its files, no
    /// secret). No process of infra owns it: its status is read from the target (`ssh::detach`).
    pub fn job_remote_started(
        &self,
        id: &str,
        tool: &str,
        action: &str,
        remote: &Value,
    ) -> Result<(), StoreError> {
        let now = crate::ctx::now_rfc3339();
        let me = ProcessRef::current();
        let text = remote.to_string();
        self.with_sync(true, |c| {
            c.execute(
                "INSERT INTO jobs(id, tool, action, status, owner_pid, created_at, owner_start, remote) VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7)",
                params![id, tool, action, me.pid, now, me.start, text],
            )
            .map(|_| ())
        })
    }

    /// Records how a job ended and what it returned (already redacted).
    pub fn job_finished(&self, id: &str, status: &str, result: &Value) -> Result<(), StoreError> {
        let now = crate::ctx::now_rfc3339();
        let text = result.to_string();
        self.with_sync(true, |c| {
            c.execute(
                "UPDATE jobs SET status = ?2, finished_at = ?3, result = ?4 WHERE id = ?1",
                params![id, status, now, text],
            )
            .map(|_| ())
        })
    }

    /// How many jobs run in a worker process now (not detached remote commands, not those whose
    /// worker is gone).
    pub fn jobs_running(&self) -> Result<usize, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'running' AND remote IS NULL"
            ))?;
            let rows = st.query_map([], job_row)?;
            let mut n = 0;
            for r in rows {
                n += usize::from(r?["status"] == "running");
            }
            Ok(n)
        })
    }

    /// Recent jobs, newest first (results left out).
    pub fn jobs(&self, limit: usize) -> Result<Vec<Value>, StoreError> {
        let mut rows: Vec<Value> = self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id LIMIT ?1"
            ))?;
            let rows = st.query_map(params![limit as i64], job_row)?;
            rows.collect()
        })?;
        for r in &mut rows {
            if let Some(o) = r.as_object_mut() {
                o.shift_remove("result");
            }
        }
        Ok(rows)
    }

    /// One job, with its result when it has ended.
    pub fn job(&self, id: &str) -> Result<Option<Value>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                params![id],
                job_row,
            )
            .optional()
        })
    }
}

#[cfg(test)]
mod tests;
