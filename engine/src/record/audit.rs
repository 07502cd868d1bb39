//! The audit log: `audit.jsonl` in the profiles directory, one JSON record per line, hash-chained.
//!
//! Every record carries `seq` (1, 2, …), `ts` and `prev`, the SHA-256 of the previous line's bytes (64 zeros
//! for the first). Appends take an exclusive file lock, so two processes on the same directory interleave
//! whole records and keep the chain. There is no API to rewrite or delete records.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Strings longer than this are cut in audit records (the evidence and artifacts keep the whole).
const MAX_FIELD: usize = 2048;

/// Why an audit record could not be written. The call that needed it must be refused.
#[derive(Debug, thiserror::Error)]
#[error("the audit log `{path}` cannot be written: {source}")]
pub struct AuditError {
    pub path: String,
    #[source]
    pub source: io::Error,
}

/// The audit log of one profiles directory.
#[derive(Debug, Clone)]
pub struct Audit {
    path: PathBuf,
}

fn sha_hex(bytes: &[u8]) -> String {
    dsl::analyze::hex(&Sha256::digest(bytes))
}

fn bound(v: &Value) -> Value {
    match v {
        Value::String(s) if s.len() > MAX_FIELD => {
            let mut cut = MAX_FIELD;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            Value::String(format!("{}… ({} bytes)", &s[..cut], s.len()))
        }
        Value::Array(a) => Value::Array(a.iter().take(100).map(bound).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), bound(x))).collect()),
        other => other.clone(),
    }
}

/// Whether a record's `hash` (its last field) is the SHA-256 of the bytes before it.
fn sealed(line: &[u8]) -> bool {
    const KEY: &[u8] = b",\"hash\":\"";
    let Some(at) = line.windows(KEY.len()).rposition(|w| w == KEY) else {
        return false;
    };
    let mut head = line[..at].to_vec();
    head.push(b'}');
    let rest = &line[at + KEY.len()..];
    rest.len() == 66 && rest.ends_with(b"\"}") && rest[..64] == *sha_hex(&head).as_bytes()
}

/// The last line of a file (without its newline) and whether the file ends with a newline.
fn last_line(f: &mut File) -> io::Result<(Vec<u8>, bool)> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((Vec::new(), true));
    }
    let mut end = len;
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    let terminated = last[0] == b'\n';
    if terminated {
        end -= 1;
    }
    // read backwards in chunks until the previous newline
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = end;
    while pos > 0 {
        let step = pos.min(8192);
        pos -= step;
        let mut chunk = vec![0u8; step as usize];
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            chunk.drain(..=i);
            chunk.extend_from_slice(&buf);
            return Ok((chunk, terminated));
        }
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    Ok((buf, terminated))
}

impl Audit {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Audit { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: io::Error) -> AuditError {
        AuditError {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Appends one record (an object; `seq`, `ts` and `prev` are added). `durable` records are fsync'd
    /// before this returns (intents of side effects). Returns the record's `seq`.
    pub fn append(&self, fields: &Value, durable: bool) -> Result<u64, AuditError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.err(e))?;
        }
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| self.err(e))?;
        f.lock().map_err(|e| self.err(e))?;
        let result = self.append_locked(&mut f, fields, durable);
        let _ = f.unlock();
        result
    }

    fn append_locked(
        &self,
        f: &mut File,
        fields: &Value,
        durable: bool,
    ) -> Result<u64, AuditError> {
        let (last, terminated) = last_line(f).map_err(|e| self.err(e))?;
        let (seq, prev) = if last.is_empty() {
            (1, GENESIS.to_owned())
        } else {
            let seq = serde_json::from_slice::<Value>(&last)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64))
                .unwrap_or(0)
                + 1;
            (seq, sha_hex(&last))
        };
        let mut rec = Map::new();
        rec.insert("seq".into(), seq.into());
        rec.insert("ts".into(), crate::ctx::now_rfc3339().into());
        rec.insert("prev".into(), prev.into());
        if let Value::Object(o) = bound(fields) {
            for (k, v) in o {
                if !matches!(k.as_str(), "seq" | "ts" | "prev" | "hash") {
                    rec.insert(k, v);
                }
            }
        }
        let mut line =
            serde_json::to_vec(&Value::Object(rec)).map_err(|e| self.err(io::Error::other(e)))?;
        // seal the record: `hash` is the SHA-256 of the line's bytes before it (with the closing brace)
        let seal = sha_hex(&line);
        line.pop();
        line.extend_from_slice(format!(",\"hash\":\"{seal}\"}}\n").as_bytes());
        if !terminated {
            // a torn record from a crash stays where it is (verify reports it); start on a new line
            line.insert(0, b'\n');
        }
        f.write_all(&line).map_err(|e| self.err(e))?;
        if durable {
            f.sync_data().map_err(|e| self.err(e))?;
        }
        Ok(seq)
    }

    /// The last `n` records (unparseable lines are shown as `{"torn": "<text>"}`).
    pub fn tail(&self, n: usize) -> io::Result<Vec<Value>> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut ring = std::collections::VecDeque::with_capacity(n + 1);
        for line in BufReader::new(f).split(b'\n') {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            let v = serde_json::from_slice(&line)
                .unwrap_or_else(|_| json!({"torn": String::from_utf8_lossy(&line)}));
            ring.push_back(v);
            if ring.len() > n {
                ring.pop_front();
            }
        }
        Ok(ring.into())
    }

    /// Checks the whole chain. Reports the first bad record: unparseable (a torn line after a crash
    /// included), out of sequence, or not chained to the line before it.
    pub fn verify(&self) -> io::Result<Verified> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Verified {
                    records: 0,
                    problem: None,
                });
            }
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::new(f);
        let mut prev_hash = GENESIS.to_owned();
        let mut expect_seq = 1u64;
        let mut line_no = 0usize;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let terminated = buf.last() == Some(&b'\n');
            if terminated {
                buf.pop();
            }
            let problem = |message: String| Verified {
                records: expect_seq - 1,
                problem: Some(Problem {
                    line: line_no,
                    seq: expect_seq,
                    message,
                }),
            };
            let Ok(v) = serde_json::from_slice::<Value>(&buf) else {
                let what = if terminated {
                    "is not valid JSON"
                } else {
                    "is torn (cut off, no newline): the process likely died while writing it"
                };
                return Ok(problem(format!("record {expect_seq} {what}")));
            };
            if !terminated {
                return Ok(problem(format!(
                    "record {expect_seq} is torn (no newline after it)"
                )));
            }
            if !sealed(&buf) {
                return Ok(problem(format!(
                    "record {expect_seq} was changed after it was written (its `hash` does not match its content)"
                )));
            }
            if v.get("seq").and_then(Value::as_u64) != Some(expect_seq) {
                return Ok(problem(format!(
                    "record {expect_seq} has seq {}",
                    v.get("seq").unwrap_or(&Value::Null)
                )));
            }
            if v.get("prev").and_then(Value::as_str) != Some(prev_hash.as_str()) {
                return Ok(problem(format!(
                    "record {expect_seq} does not chain to the record before it (prev {} ≠ {prev_hash}): a record was changed, removed or inserted",
                    v.get("prev").and_then(Value::as_str).unwrap_or("missing")
                )));
            }
            prev_hash = sha_hex(&buf);
            expect_seq += 1;
        }
        Ok(Verified {
            records: expect_seq - 1,
            problem: None,
        })
    }
}

/// The result of [`Audit::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Good records before the first problem (all of them when there is none).
    pub records: u64,
    pub problem: Option<Problem>,
}

/// The first bad record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// One-based line in the file.
    pub line: usize,
    pub seq: u64,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_chain_and_verify() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = Audit::new(dir.path().join("audit.jsonl"));
        for i in 0..5 {
            assert_eq!(
                a.append(&json!({"kind": "call", "i": i}), i % 2 == 0)
                    .expect("append"),
                i + 1
            );
        }
        assert_eq!(
            a.verify().expect("verify"),
            Verified {
                records: 5,
                problem: None
            }
        );
        let tail = a.tail(2).expect("tail");
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[1]["seq"], 5);
    }

    #[test]
    fn an_edited_record_is_found() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let a = Audit::new(&path);
        for i in 0..4 {
            a.append(&json!({"kind": "call", "tool": format!("t{i}")}), false)
                .expect("append");
        }
        let text = std::fs::read_to_string(&path)
            .expect("read")
            .replace("\"t1\"", "\"tX\"");
        std::fs::write(&path, text).expect("write");
        let v = a.verify().expect("verify");
        let p = v.problem.expect("problem");
        assert_eq!((p.line, p.seq, v.records), (2, 2, 1), "{}", p.message);
        assert!(p.message.contains("changed"), "{}", p.message);
    }

    #[test]
    fn a_removed_record_breaks_the_chain_where_it_was() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let a = Audit::new(&path);
        for i in 0..4 {
            a.append(&json!({"kind": "call", "i": i}), false)
                .expect("append");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| l)
            .collect();
        std::fs::write(&path, kept.join("\n") + "\n").expect("write");
        let p = a.verify().expect("verify").problem.expect("problem");
        assert_eq!((p.line, p.seq), (2, 2), "{}", p.message);
    }

    #[test]
    fn a_torn_last_line_is_reported_and_appends_go_on() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let a = Audit::new(&path);
        a.append(&json!({"kind": "call"}), false).expect("append");
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"seq\":2,\"ts\":\"x\",\"pr").expect("torn");
        drop(f);
        let p = a.verify().expect("verify").problem.expect("torn");
        assert_eq!(p.line, 2);
        assert!(p.message.contains("torn"), "{}", p.message);
        a.append(&json!({"kind": "call"}), false)
            .expect("append after a crash");
        assert_eq!(
            a.verify()
                .expect("verify")
                .problem
                .expect("still reported")
                .line,
            2
        );
    }

    #[test]
    fn two_writers_keep_one_chain() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        std::thread::scope(|s| {
            for t in 0..4 {
                let a = Audit::new(&path);
                s.spawn(move || {
                    for i in 0..25 {
                        a.append(&json!({"kind": "call", "t": t, "i": i}), false)
                            .expect("append");
                    }
                });
            }
        });
        assert_eq!(
            Audit::new(&path).verify().expect("verify"),
            Verified {
                records: 100,
                problem: None
            }
        );
    }

    #[test]
    fn an_unwritable_log_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        // a directory where the file should be
        let path = dir.path().join("audit.jsonl");
        std::fs::create_dir(&path).expect("dir");
        assert!(
            Audit::new(&path)
                .append(&json!({"kind": "call"}), true)
                .is_err()
        );
    }
}
