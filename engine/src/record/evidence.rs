//! The evidence journal of one run: `journal.jsonl` in the run directory, one JSON record per
//! transition, appended (never rewritten): O(1) per transition whatever the run's size. Record
//! shapes are [`Record`]; their JSON Schema is `schemas/evidence.schema.json`.
//!
//! Records: `run_started` (with `resumed_from` when the run resumes another), `node_started` and
//! `node_finished` per attempt (digests and byte counts, not output), `node_result` once per main
//! step that succeeded (its whole result, redacted: in the line, or as the artifact
//! `<step>/result.json` with its digest when it is over [`RESULT_INLINE`]; or why it is not kept; with
//! `reused_from` when a resumed run took it from an earlier run instead of running the step),
//! `node_skipped`, `run_finished`. A resume (`run/resume.rs`) reads `node_result` back. `Journal` appends one whole line per write under a
//! mutex and is created with `create_new`, so a run directory is never reused; `read` reads one
//! back and flags a torn last line.
//!
//! A single call (one action, or a front end's own call) has no directory of its own unless it
//! writes an artifact: its records go to its process's calls journal (`SessionJournal`,
//! `runs/.calls/<stamp>-<id>.jsonl`), one file per process, shared by every call it makes, so a
//! cheap call costs a few appends and no `mkdir`. Every record names its run, and the run index
//! keeps where the run's first record starts ([`Journal::start`]), so [`read_run`] reads one run
//! back from there, whichever journal holds it. The process holds a shared lock on its calls journal
//! while it lives, which tells retention the journal still has a writer.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a node or a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
    TimedOut,
    Refused,
}

impl Status {
    /// The word records and results carry (`succeeded`, `timed_out`, …), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Cancelled => "cancelled",
            Status::TimedOut => "timed_out",
            Status::Refused => "refused",
        }
    }
}

/// A failure, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorInfo {
    /// `invalid_args`, `refused`, `nonzero_exit`, `timeout`, `cancelled`, `failed`, `audit_unavailable`, …
    pub kind: String,
    pub message: String,
}

/// One line of a run's journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Record {
    /// The run began.
    RunStarted {
        run_id: String,
        ts: String,
        runbook: String,
        /// Where the runbook came from (file name or `<builtin>/…`).
        source: String,
        runbook_digest: String,
        plan_digest: String,
        /// Inputs, secrets redacted.
        inputs: Value,
        effects: String,
        /// The run this one resumes (`infra run --resume`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed_from: Option<String>,
    },
    /// One attempt of a node began.
    NodeStarted {
        run_id: String,
        ts: String,
        step: String,
        attempt: u32,
        /// The `foreach` index, when the step runs per item.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        tool: String,
        action: String,
        /// Rendered arguments, secrets redacted.
        args: Value,
    },
    /// One attempt of a node ended.
    NodeFinished {
        run_id: String,
        ts: String,
        step: String,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        status: Status,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
        /// Byte counts and SHA-256 digests of outputs (`stdout_bytes`, `stdout_sha256`, …).
        #[serde(default, skip_serializing_if = "Value::is_null")]
        outputs: Value,
        /// URIs of the artifacts this attempt wrote.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        artifacts: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
    /// A main step succeeded: its whole result (what later steps and outputs read), kept so that a
    /// resumed run can use it without running the step again.
    NodeResult {
        run_id: String,
        ts: String,
        step: String,
        /// The result, redacted, when it is kept in the journal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// Where the result is when it is too big for the journal: an artifact, with its size and
        /// SHA-256.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        artifact: Option<KeptArtifact>,
        /// Why the result is not kept (it held a secret): a resume cannot reuse it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unkept: Option<String>,
        /// The run that ran the step, when this run reused its result instead of running it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reused_from: Option<String>,
    },
    /// A node did not run.
    NodeSkipped {
        run_id: String,
        ts: String,
        step: String,
        /// `when` was false, a needed step was skipped or failed, or the run stopped first.
        reason: String,
    },
    /// The run ended.
    RunFinished {
        run_id: String,
        ts: String,
        status: Status,
        duration_ms: u64,
        /// The runbook's outputs, secrets redacted.
        outputs: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
}

impl Record {
    /// The run the record belongs to.
    pub fn run_id(&self) -> &str {
        match self {
            Record::RunStarted { run_id, .. }
            | Record::NodeStarted { run_id, .. }
            | Record::NodeFinished { run_id, .. }
            | Record::NodeResult { run_id, .. }
            | Record::NodeSkipped { run_id, .. }
            | Record::RunFinished { run_id, .. } => run_id,
        }
    }
}

impl Record {
    /// The record without its payloads (arguments, inputs, outputs, results), which are not copied:
    /// what a picture of the run (`report::View`) draws, small enough to hold for every
    /// record of a long run.
    pub fn outline(&self) -> Record {
        match self {
            Record::NodeResult {
                run_id,
                ts,
                step,
                reused_from,
                ..
            } => Record::NodeResult {
                run_id: run_id.clone(),
                ts: ts.clone(),
                step: step.clone(),
                result: None,
                artifact: None,
                unkept: None,
                reused_from: reused_from.clone(),
            },
            Record::NodeStarted {
                run_id,
                ts,
                step,
                attempt,
                index,
                tool,
                action,
                ..
            } => Record::NodeStarted {
                run_id: run_id.clone(),
                ts: ts.clone(),
                step: step.clone(),
                attempt: *attempt,
                index: *index,
                tool: tool.clone(),
                action: action.clone(),
                args: Value::Null,
            },
            Record::NodeFinished {
                run_id,
                ts,
                step,
                attempt,
                index,
                status,
                duration_ms,
                exit_code,
                artifacts,
                error,
                ..
            } => Record::NodeFinished {
                run_id: run_id.clone(),
                ts: ts.clone(),
                step: step.clone(),
                attempt: *attempt,
                index: *index,
                status: *status,
                duration_ms: *duration_ms,
                exit_code: *exit_code,
                outputs: Value::Null,
                artifacts: artifacts.clone(),
                error: error.clone(),
            },
            Record::RunStarted { .. } | Record::NodeSkipped { .. } | Record::RunFinished { .. } => {
                let mut r = self.clone();
                if let Record::RunStarted { inputs: v, .. }
                | Record::RunFinished { outputs: v, .. } = &mut r
                {
                    *v = Value::Null;
                }
                r
            }
        }
    }
}

/// A step's result kept as an artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KeptArtifact {
    pub uri: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The largest result (compact JSON) kept in the journal's line; a bigger one is an artifact.
pub const RESULT_INLINE: usize = 64 * 1024;

/// The JSON Schema of journal records.
pub fn schema() -> Value {
    let mut s = schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12())
        .into_root_schema_for::<Record>()
        .to_value();
    if let Some(o) = s.as_object_mut() {
        o.insert(
            "$id".into(),
            "https://infra.invalid/schemas/evidence.schema.json".into(),
        );
        o.insert("title".into(), "infra evidence record".into());
        o.insert(
            "description".into(),
            "One line of a run's journal (`runs/<runbook>/<stamp>-<short id>/journal.jsonl`)."
                .into(),
        );
    }
    s
}

/// The file under a journal and where it ends (only this process appends to it).
#[derive(Debug)]
struct Tail {
    file: File,
    end: u64,
}

impl Tail {
    fn open(path: &Path) -> io::Result<Tail> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        Ok(Tail { file, end: 0 })
    }

    /// Appends one whole line, or none of it: a write cut short (a full disk, a quota) is cut off
    /// again, so the next line starts where this one would have, and a reader that starts at a
    /// recorded offset starts on a line.
    fn append_line(&mut self, line: &[u8]) -> io::Result<()> {
        if let Err(e) = (&self.file).write_all(line) {
            self.undo_part();
            return Err(e);
        }
        self.end += line.len() as u64;
        Ok(())
    }

    /// Removes what a failed write left past `end`; where the file cannot be cut, ends the part with
    /// a newline (read back as one damaged line) and moves `end` past it.
    fn undo_part(&mut self) {
        if self.file.set_len(self.end).is_ok() {
            return;
        }
        if self.file.metadata().is_ok_and(|m| m.len() > self.end) {
            let _ = (&self.file).write_all(b"\n");
            if let Ok(m) = self.file.metadata() {
                self.end = m.len();
            }
        }
    }
}

/// An open journal: a run's own `journal.jsonl`, or its place in a calls journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    tail: Arc<Mutex<Tail>>,
    start: u64,
    /// The outlines of the records written, when asked for ([`Journal::keeping_outlines`]).
    outlines: Option<Mutex<Vec<Record>>>,
}

impl Journal {
    /// Creates `journal.jsonl` in `dir` (which is created).
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("journal.jsonl");
        Ok(Journal {
            tail: Arc::new(Mutex::new(Tail::open(&path)?)),
            path,
            start: 0,
            outlines: None,
        })
    }

    /// This journal, also holding the [`Record::outline`] of every record it writes, so the run's
    /// report is drawn at its end without reading the journal back.
    pub fn keeping_outlines(mut self) -> Self {
        self.outlines = Some(Mutex::new(Vec::new()));
        self
    }

    /// The outlines of the records written so far (taken), if this journal keeps them.
    pub fn take_outlines(&self) -> Option<Vec<Record>> {
        let kept = self.outlines.as_ref()?;
        Some(std::mem::take(&mut *kept.lock().ok()?))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The byte offset of the journal where this run's records start: 0 for a journal of its own.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Appends one record (one `write` of one whole line). `durable` records are fsync'd.
    pub fn append(&self, r: &Record, durable: bool) -> io::Result<()> {
        let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut t = self
            .tail
            .lock()
            .map_err(|_| io::Error::other("journal lock poisoned"))?;
        t.append_line(&line)?;
        if let Some(kept) = &self.outlines
            && let Ok(mut kept) = kept.lock()
        {
            kept.push(r.outline());
        }
        if durable {
            t.file.sync_data()?;
        }
        Ok(())
    }
}

/// One process's journal of single calls: `<dir>/<stamp>-<short id>.jsonl`, made on the first call.
#[derive(Debug, Clone)]
pub struct SessionJournal {
    path: PathBuf,
    tail: Arc<Mutex<Tail>>,
}

impl SessionJournal {
    /// Creates a new calls journal in `dir` (which is created).
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let id = crate::ctx::new_id();
        let path = dir.join(format!("{}-{}.jsonl", crate::ctx::now_stamp(), &id[..8]));
        let tail = Tail::open(&path)?;
        // held while this process lives: retention removes no journal a process still writes
        tail.file.lock_shared()?;
        Ok(SessionJournal {
            tail: Arc::new(Mutex::new(tail)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A journal for one more run, whose records start at the current end.
    pub fn journal(&self) -> io::Result<Journal> {
        let start = self
            .tail
            .lock()
            .map_err(|_| io::Error::other("journal lock poisoned"))?
            .end;
        Ok(Journal {
            path: self.path.clone(),
            tail: Arc::clone(&self.tail),
            start,
            outlines: None,
        })
    }
}

/// A journal read back: its records, and whether its last line is torn (the writer died mid-line).
#[derive(Debug, Default)]
pub struct ReadBack {
    pub records: Vec<Record>,
    pub torn: bool,
}

impl ReadBack {
    /// Whether the run ended (has `run_finished`).
    pub fn finished(&self) -> bool {
        self.records
            .iter()
            .any(|r| matches!(r, Record::RunFinished { .. }))
    }
}

/// Reads a journal; a damaged line stops the read and is reported as torn.
pub fn read(path: &Path) -> io::Result<ReadBack> {
    read_from(path, 0, None)
}

/// Reads the records of run `run_id` from its journal, starting at byte `start` (where the run index
/// says its first record is) and ending with its `run_finished`. Records of other runs sharing the
/// journal are passed over; a damaged line stops the read and is reported as torn.
pub fn read_run(path: &Path, start: u64, run_id: &str) -> io::Result<ReadBack> {
    read_from(path, start, Some(run_id))
}

fn read_from(path: &Path, start: u64, run_id: Option<&str>) -> io::Result<ReadBack> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut out = ReadBack::default();
    for line in BufReader::new(f).split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) if run_id.is_some_and(|id| id != r.run_id()) => {}
            Ok(r) => {
                let end = run_id.is_some() && matches!(r, Record::RunFinished { .. });
                out.records.push(r);
                if end {
                    break;
                }
            }
            Err(_) => {
                out.torn = true;
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(run_id: &str, status: Status) -> Record {
        Record::RunFinished {
            run_id: run_id.into(),
            ts: "t".into(),
            status,
            duration_ms: 1,
            outputs: Value::Null,
            error: None,
        }
    }

    fn skipped(run_id: &str, step: &str) -> Record {
        Record::NodeSkipped {
            run_id: run_id.into(),
            ts: "t".into(),
            step: step.into(),
            reason: "r".into(),
        }
    }

    #[test]
    fn a_write_cut_short_leaves_nothing_the_next_record_would_follow() {
        let dir = tempfile::tempdir().expect("tmp");
        let calls = SessionJournal::create(&dir.path().join("runs/.calls")).expect("create");
        let first = calls.journal().expect("journal");
        first
            .append(&finished("one", Status::Succeeded), false)
            .expect("append");
        {
            // what a write that failed half-way leaves behind
            let mut t = calls.tail.lock().expect("tail");
            (&t.file).write_all(b"{\"event\":\"node_sta").expect("part");
            t.undo_part();
        }
        let second = calls.journal().expect("journal");
        second
            .append(&finished("two", Status::Succeeded), false)
            .expect("append");
        let back = read_run(calls.path(), second.start(), "two").expect("read");
        assert!(!back.torn);
        assert_eq!(back.records.len(), 1);
        let whole = std::fs::read_to_string(calls.path()).expect("read");
        assert_eq!(whole.lines().count(), 2, "{whole}");
        assert!(!whole.contains("node_sta"));
    }

    #[test]
    fn runs_sharing_a_calls_journal_read_back_apart() {
        let dir = tempfile::tempdir().expect("tmp");
        let calls = SessionJournal::create(&dir.path().join("runs/.calls")).expect("create");
        // an earlier run, then two that interleave, then one that never finishes
        let first = calls.journal().expect("journal");
        first.append(&skipped("one", "a"), false).expect("append");
        first
            .append(&finished("one", Status::Succeeded), false)
            .expect("append");
        let (a, b) = (calls.journal().expect("a"), calls.journal().expect("b"));
        assert!(
            a.start() > 0 && a.start() == b.start(),
            "both start at the end"
        );
        a.append(&skipped("two", "x"), false).expect("append");
        b.append(&skipped("three", "y"), true).expect("append");
        a.append(&finished("two", Status::Failed), false)
            .expect("append");
        b.append(&finished("three", Status::Succeeded), false)
            .expect("append");
        let open = calls.journal().expect("open");
        open.append(&skipped("four", "z"), false).expect("append");
        // a later call of another run after this one's end is not read
        calls
            .journal()
            .expect("five")
            .append(&finished("five", Status::Failed), false)
            .expect("append");
        let steps = |back: &ReadBack| -> Vec<String> {
            back.records
                .iter()
                .map(|r| match r {
                    Record::NodeSkipped { step, .. } => step.clone(),
                    Record::RunFinished { status, .. } => status.as_str().to_owned(),
                    _ => "?".into(),
                })
                .collect()
        };
        let path = calls.path();
        assert_eq!(path.extension().and_then(|e| e.to_str()), Some("jsonl"));
        let two = read_run(path, a.start(), "two").expect("two");
        assert_eq!(steps(&two), ["x", "failed"]);
        assert!(two.finished() && !two.torn);
        let three = read_run(path, b.start(), "three").expect("three");
        assert_eq!(steps(&three), ["y", "succeeded"]);
        assert_eq!(
            steps(&read_run(path, 0, "one").expect("one")),
            ["a", "succeeded"]
        );
        let four = read_run(path, open.start(), "four").expect("four");
        assert_eq!(steps(&four), ["z"]);
        assert!(!four.finished());
        // the process died mid-write: the torn line is reported to the run that was still going
        OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(b"{\"event\":\"node_sk"))
            .expect("tear");
        let torn = read_run(path, open.start(), "four").expect("four");
        assert!(torn.torn && !torn.finished());
        assert!(!read_run(path, a.start(), "two").expect("two").torn);
        // each process has its own calls journal
        let other = SessionJournal::create(&dir.path().join("runs/.calls")).expect("again");
        assert_ne!(other.path(), calls.path());
    }

    #[test]
    fn a_status_word_is_the_one_serde_writes() {
        for s in [
            Status::Succeeded,
            Status::Failed,
            Status::Skipped,
            Status::Cancelled,
            Status::TimedOut,
            Status::Refused,
        ] {
            assert_eq!(serde_json::to_value(s).expect("json"), s.as_str());
        }
    }
}
