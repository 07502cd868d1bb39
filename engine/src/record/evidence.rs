//! The evidence journal of one run: `journal.jsonl` in the run directory, one JSON record per
//! transition, appended (never rewritten): O(1) per transition whatever the run's size. Record
//! shapes are [`Record`]; their JSON Schema is `schemas/evidence.schema.json`.
//!
//! Records: `run_started`, `node_started` and `node_finished` per attempt (digests and byte counts,
//! not output), `node_skipped`, `run_finished`. `Journal` appends one whole line per write under a
//! mutex and is created with `create_new`, so a run directory is never reused; `read` reads one
//! back and flags a torn last line.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Creates `journal.jsonl` in `dir` (which is created).
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("journal.jsonl");
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        Ok(Journal {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (one `write` of one whole line). `durable` records are fsync'd.
    pub fn append(&self, r: &Record, durable: bool) -> io::Result<()> {
        let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
        line.push(b'\n');
        let f = self
            .file
            .lock()
            .map_err(|_| io::Error::other("journal lock poisoned"))?;
        (&*f).write_all(&line)?;
        if durable {
            f.sync_data()?;
        }
        Ok(())
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
    let f = File::open(path)?;
    let mut out = ReadBack::default();
    for line in BufReader::new(f).split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) => out.records.push(r),
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
