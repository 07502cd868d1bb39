//! The audit log: `audit.jsonl` in the profiles directory, one JSON record per line, hash-chained.
//!
//! Every record carries `seq` (1, 2, …), `ts` and `prev`, the SHA-256 of the previous line's bytes
//! (64 zeros for the first). Appends take an exclusive file lock, so two processes on the same
//! directory interleave whole records and keep the chain. There is no API to rewrite or delete
//! records.
//!
//! Rotation (`with_rotation`, the policy's `audit.rotate_bytes`): an append that finds `audit.jsonl`
//! at or past the size renames it, under its lock, to the next `audit.<n>.jsonl` (1, 2, …; higher is
//! newer) and appends to a new `audit.jsonl`, whose first record goes on from the rotated file's last
//! (`seq` + 1, `prev` its hash): one chain across files ([`Audit::files`]), which `verify` and `tail`
//! read in order. After taking the lock an append checks that the path still names the file it locked
//! (else another process rotated it: it opens the new one), so no record lands in a rotated file. A
//! crash between the rename and the next record leaves no `audit.jsonl`; the next append makes it and
//! chains to the rotated file, so the chain verifies either way. The directory is fsync'd after the
//! rename and after a new `audit.jsonl` is made (`sync_dir`), so neither is lost in a power cut while
//! records synced into the file survive. Files are never deleted.
//!
//! `append(fields, durable)` takes the lock of the file it keeps open (`OpenLog`; opened again when,
//! under the lock, the path names another file), reads the last complete record backwards
//! (`last_record`) unless the file has the length this process left it with (then the remembered
//! `seq` and hash are the head), and writes one line: `seq`, `ts`, `prev`, the fields (strings cut at
//! 2 KiB, arrays at 100 items: `Bounded`, which serializes them cut without copying them), with a key
//! a `mac`, and last `hash`, the SHA-256 of the line before it (`sealed`, `split_last`). An append is
//! a lock, a stat of the path, a stat of the file, one write and an unlock. `durable` fsyncs.
//!
//! Torn lines. A crash while writing leaves a torn last line (no newline, does not parse). The next
//! append ends it with a newline and goes on from the last complete record before it (`seq` + 1,
//! `prev` its hash; with none in the file, as from an empty file: the rotated file's last record, or
//! genesis), passing over any torn lines after that record. `verify` takes a line that does not parse
//! as a crash's remnant when the next record goes on from the last complete one before it: it notes
//! it (`Verified::torn` and `notes`, with file and line) and goes on checking the chain, seals and
//! anchor after it. It cannot hide a forgery: a record replaced by garbage is still a problem (at the
//! garbage line) because the record after it names the replaced record's hash in `prev`, not the one
//! before; records after a torn line are checked like any other; and a line that does not parse with
//! no record after it (torn at the very end) is reported as the log's problem, as is a complete record
//! without its newline at the end of the log.
//!
//! The chain alone cannot tell a log cut back at a record boundary, or emptied, from a shorter one.
//! So appends also hand the new head (the last record's `seq`, `hash` and `ts`) to a [`HeadKeeper`]
//! (the store), still under the lock, and only once the record is on disk, so a kept head is never
//! ahead of what a power loss leaves of the log: a durable record's head at once (it was fsync'd);
//! another's when the keeper says a head is due (`HeadKeeper::due`: at most 50 ms apart), after one
//! `fdatasync` of the file, else it waits in `OpenLog::pending` and is kept, the file synced first,
//! with the next due head, at `Audit::flush_head` (which `verify` in the engine calls first), or when
//! the open file is dropped (the log dropped, opened again, rotated). So syncs for heads are at most
//! one per interval, never one per record. And [`Audit::verify_with`] compares the log's
//! end with the head kept there (the `Anchor`: a head past the log's end, or runs listed with an
//! empty or missing log, are problems naming the records missing) and with a checkpoint, the
//! `<seq>:<hash>` word of `Head::checkpoint`/`parse_checkpoint`. It reports the first bad record:
//! unparseable (but a crash's torn line, above), seal broken, out of sequence, not chained, a `mac`
//! that does not match or is missing after sealed records, a hash that differs from the head or
//! checkpoint at its `seq`. `Verified` has `records`, `problem`, `last`, `macs`, `notes` (what was not
//! checked, and torn lines) and `torn`.
//!
//! `verify` reads a snapshot, so another process appending or rotating meanwhile shows no false
//! problem: it takes a shared lock on `audit.jsonl` (appends and rotations take it exclusive) only
//! to list the files, open them all, note the current file's length and read the anchor
//! (`verify_reading`: the engine reads the store's head there, so the head names no record past the
//! snapshot), then reads the open files up to that length without the lock. With no `audit.jsonl` to
//! lock, the anchor is read between two looks that find none, before the files are listed
//! (`snapshot`).
//!
//! Anyone who can write the log can also recompute a plain chain after forging a record. With a key
//! (`INFRA_AUDIT_KEY`), each record also carries `mac`, an HMAC-SHA256 of its bytes before it
//! (`hmac_sha256`, RFC 2104 over sha2, tested against RFC 4231), which cannot be recomputed without
//! the key; `verify` with the key checks every one.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
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

pub use crate::ctx::AuditKey;

/// The seal of `bytes` under `key`, as 64 hex digits.
fn seal_with(key: &AuditKey, bytes: &[u8]) -> String {
    dsl::analyze::hex(&hmac_sha256(key.bytes(), bytes))
}

/// HMAC-SHA256 (RFC 2104): `H((K ^ opad) || H((K ^ ipad) || message))`, with a key longer than the
/// 64-byte block hashed first.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Compares two seals in time that does not depend on where they first differ.
fn same_seal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The last record of the log: its `seq`, its `hash` and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    pub ts: String,
}

impl Head {
    pub fn to_json(&self) -> Value {
        json!({"seq": self.seq, "hash": self.hash, "ts": self.ts, "checkpoint": self.checkpoint()})
    }

    /// The head as one word, `<seq>:<hash>`, to keep somewhere infra cannot write and give back to
    /// `verify` later.
    pub fn checkpoint(&self) -> String {
        format!("{}:{}", self.seq, self.hash)
    }

    /// A checkpoint from text: the JSON `audit checkpoint --json` prints (`seq` and `hash`), or any
    /// text holding a `<seq>:<hash>` word (what `audit checkpoint` prints, alone or among other words).
    pub fn parse_checkpoint(text: &str) -> Result<Head, String> {
        let is_hash = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
        let t = text.trim();
        if t.starts_with('{') {
            let v: Value = serde_json::from_str(t).map_err(|e| format!("not a checkpoint: {e}"))?;
            let seq = v.get("seq").and_then(Value::as_u64);
            let hash = v.get("hash").and_then(Value::as_str).filter(|h| is_hash(h));
            return match (seq, hash) {
                (Some(seq), Some(hash)) if seq > 0 => Ok(Head {
                    seq,
                    hash: hash.to_ascii_lowercase(),
                    ts: v
                        .get("ts")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                }),
                _ => {
                    Err("a JSON checkpoint needs `seq` (from 1) and `hash` (64 hex digits)".into())
                }
            };
        }
        t.split_whitespace()
            .find_map(|w| {
                let (seq, hash) = w.split_once(':')?;
                let seq = seq.parse::<u64>().ok().filter(|s| *s > 0)?;
                is_hash(hash).then(|| Head {
                    seq,
                    hash: hash.to_ascii_lowercase(),
                    ts: String::new(),
                })
            })
            .ok_or_else(|| {
                "no checkpoint found: give `<seq>:<hash>` as `infra audit checkpoint` printed it, or a file holding it".into()
            })
    }
}

/// Keeps the head of the log somewhere besides the log (the store), so a cut or emptied log shows.
///
/// Every head handed to `keep` names a record that is on disk (the log's file was synced after it
/// was written), so a kept head is never ahead of what survives a power loss.
pub trait HeadKeeper: Send + Sync + std::fmt::Debug {
    /// Whether the head of a record that is not durable is to be kept now (the keeper groups them:
    /// the store at most `HEAD_INTERVAL` apart). When it is, the log syncs its file, then calls
    /// `keep`; else the head waits in the log (`Audit::flush_head`).
    fn due(&self) -> bool;
    /// Keeps `head`, which names a synced record. Called while the log is locked after a durable
    /// record or a due head, and when a waiting head is flushed. Best effort: the record is written
    /// whether or not this keeps it.
    fn keep(&self, head: &Head);
}

/// The syncs of one log handle's file: how many, and the last record synced (0: none). For tests.
#[derive(Debug, Default)]
pub(crate) struct Syncs {
    pub(crate) count: std::sync::atomic::AtomicU64,
    pub(crate) seq: std::sync::atomic::AtomicU64,
}

impl Syncs {
    fn synced(&self, seq: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.count.fetch_add(1, SeqCst);
        self.seq.fetch_max(seq, SeqCst);
    }
}

/// The audit log of one profiles directory.
#[derive(Debug, Clone)]
pub struct Audit {
    path: PathBuf,
    keeper: Option<Arc<dyn HeadKeeper>>,
    key: Option<AuditKey>,
    /// The file kept open between appends, and the end it had after this process's last append.
    open: Arc<Mutex<Option<OpenLog>>>,
    /// The size at which the log is rotated (`None`: never).
    rotate_bytes: Option<u64>,
    syncs: Arc<Syncs>,
}

/// The log as this process last left it: the open file, which file that is, and its last record.
#[derive(Debug)]
struct OpenLog {
    file: File,
    /// Device and inode: a log renamed or replaced under its path is opened again.
    id: (u64, u64),
    /// Its length after this process's last append; any other length means another writer.
    len: u64,
    seq: u64,
    /// The SHA-256 of the last record's line: the next record's `prev`.
    prev: String,
    /// The head of a record this process wrote, not durable, that the keeper has not kept yet: kept
    /// (after a sync) at the next due head, `Audit::flush_head`, or when this is dropped.
    pending: Option<Head>,
    keeper: Option<Arc<dyn HeadKeeper>>,
    syncs: Arc<Syncs>,
}

impl OpenLog {
    /// Syncs the file and keeps `head`, which names a record in it: the kept head is on disk.
    fn sync_and_keep(&mut self, head: Head) {
        let Some(keeper) = &self.keeper else { return };
        if self.file.sync_data().is_ok() {
            self.syncs.synced(head.seq);
            keeper.keep(&head);
        } else {
            // not on disk, so not kept: the next due head or flush tries again
            self.pending = Some(head);
        }
    }

    /// Keeps the waiting head, if there is one (its record's file synced first).
    fn flush(&mut self) {
        if let Some(head) = self.pending.take() {
            self.sync_and_keep(head);
        }
    }
}

impl Drop for OpenLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// What the log's end is compared with.
#[derive(Debug, Clone, Default)]
pub enum Anchor {
    /// Nothing to compare with: the chain alone is checked.
    #[default]
    None,
    /// There is no store: the log's end cannot be compared.
    NoStore,
    /// The store could not be read.
    Unreadable(String),
    /// The store: the head it kept (none before the first append that kept one) and how many runs it
    /// lists (every run writes audit records).
    Store { head: Option<Head>, runs: u64 },
}

/// What [`Audit::verify_with`] checks besides the chain.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub anchor: Anchor,
    /// A head kept elsewhere (`infra audit checkpoint`): the log must still hold that record, with
    /// that hash.
    pub checkpoint: Option<Head>,
}

fn sha_hex(bytes: &[u8]) -> String {
    dsl::analyze::hex(&Sha256::digest(bytes))
}

/// `v` as the log writes it: strings longer than `MAX_FIELD` cut (with their length), arrays at
/// 100 items. Serialized in place, so a record's values are not copied to be bounded.
struct Bounded<'a>(&'a Value);

impl serde::Serialize for Bounded<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::String(t) if t.len() > MAX_FIELD => {
                let mut cut = MAX_FIELD;
                while !t.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.serialize_str(&format!("{}… ({} bytes)", &t[..cut], t.len()))
            }
            Value::Array(a) => {
                let n = a.len().min(100);
                let mut seq = s.serialize_seq(Some(n))?;
                for x in a.iter().take(n) {
                    seq.serialize_element(&Bounded(x))?;
                }
                seq.end()
            }
            Value::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, x) in o {
                    map.serialize_entry(k, &Bounded(x))?;
                }
                map.end()
            }
            other => other.serialize(s),
        }
    }
}

/// What one append writes after `seq`, `ts` and `prev`.
#[derive(Clone, Copy)]
enum Body<'a> {
    /// An object's fields, cut (`Bounded`); the names the log owns are left out.
    Fields(&'a Value),
    /// A typed record that needs no cut ([`AuditRecord::fits`](super::AuditRecord::fits)).
    Record(&'a super::AuditRecord),
}

/// Whether `v` is written as it is: no string over `MAX_FIELD` bytes, no array over 100 items, at
/// any depth (bounded: deeper values are taken as not fitting, and go through `Bounded`).
fn fits(v: &Value, depth: usize) -> bool {
    match v {
        Value::String(s) => s.len() <= MAX_FIELD,
        Value::Array(a) => depth < 64 && a.len() <= 100 && a.iter().all(|x| fits(x, depth + 1)),
        Value::Object(o) => depth < 64 && o.values().all(|x| fits(x, depth + 1)),
        _ => true,
    }
}

/// A record without its last field when that is `"<name>":"<64 hex digits>"`: the bytes before the
/// field (with the closing brace), and the field's value.
fn split_last<'a>(line: &'a [u8], name: &str) -> Option<(Vec<u8>, &'a [u8])> {
    let key = format!(",\"{name}\":\"");
    let at = line.windows(key.len()).rposition(|w| w == key.as_bytes())?;
    let rest = &line[at + key.len()..];
    if rest.len() != 66 || !rest.ends_with(b"\"}") {
        return None;
    }
    let mut head = line[..at].to_vec();
    head.push(b'}');
    Some((head, &rest[..64]))
}

/// Whether a record's `hash` (its last field) is the SHA-256 of the bytes before it.
fn sealed(line: &[u8]) -> bool {
    split_last(line, "hash").is_some_and(|(head, hash)| hash == sha_hex(&head).as_bytes())
}

/// Syncs the directory holding `path`, so a file made or renamed there survives a crash. Best
/// effort: a directory that cannot be opened or synced leaves what the filesystem does by itself.
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A complete record's `seq` (`None` for a torn line, cut by a crash, or anything else without one).
fn record_seq(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64))
}

/// The line of `f` that ends at byte `end` (exclusive: at a newline or the file's end), and where it
/// starts. Read backwards in chunks.
fn line_before(f: &mut File, end: u64) -> io::Result<(Vec<u8>, u64)> {
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = end;
    while pos > 0 {
        let step = pos.min(8192);
        pos -= step;
        let mut chunk = vec![0u8; usize::try_from(step).unwrap_or(8192)];
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            chunk.drain(..=i);
            chunk.extend_from_slice(&buf);
            return Ok((chunk, pos + i as u64 + 1));
        }
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    Ok((buf, 0))
}

/// A record's line (without its newline) and its `seq`.
type RecordLine = (Vec<u8>, u64);

/// The last complete record of a file (its line without the newline, and its `seq`; `None` when it
/// holds none) and whether the file ends with a newline. Torn lines after it (a crash cut them, or
/// cut the newline an append put after one) are passed over: the next record goes on from the last
/// complete one.
fn last_record(f: &mut File) -> io::Result<(Option<RecordLine>, bool)> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((None, true));
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    let terminated = last[0] == b'\n';
    let mut end = if terminated { len - 1 } else { len };
    loop {
        let (line, start) = line_before(f, end)?;
        if let Some(seq) = record_seq(&line) {
            return Ok((Some((line, seq)), terminated));
        }
        if start == 0 {
            return Ok((None, terminated));
        }
        end = start - 1;
    }
}

impl Audit {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Audit {
            path: path.into(),
            keeper: None,
            key: None,
            open: Arc::new(Mutex::new(None)),
            rotate_bytes: None,
            syncs: Arc::default(),
        }
    }

    /// The same log, rotated once it holds `bytes`: see the module's header.
    pub fn with_rotation(mut self, bytes: Option<u64>) -> Self {
        self.rotate_bytes = bytes.map(|b| b.max(1));
        self
    }

    /// The path of rotated file `n` (`audit.<n>.jsonl` beside `audit.jsonl`).
    fn rotated(&self, n: u64) -> PathBuf {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "audit".into());
        let ext = self
            .path
            .extension()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "jsonl".into());
        self.path.with_file_name(format!("{stem}.{n}.{ext}"))
    }

    /// The numbers of the rotated files, in order (oldest first).
    fn rotated_numbers(&self) -> Vec<u64> {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = self
            .path
            .extension()
            .map(|s| format!(".{}", s.to_string_lossy()))
            .unwrap_or_default();
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<u64> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n = name
                    .strip_prefix(&format!("{stem}."))?
                    .strip_suffix(&ext)?
                    .parse::<u64>()
                    .ok()?;
                (n > 0).then_some(n)
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The log's files in order: the rotated ones (`audit.1.jsonl`, `audit.2.jsonl`, …), then
    /// `audit.jsonl` (which may not exist yet).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .rotated_numbers()
            .into_iter()
            .map(|n| self.rotated(n))
            .collect();
        files.push(self.path.clone());
        files
    }

    /// The same log, sealing each new record with `key` and checking seals with it.
    pub fn with_key(mut self, key: Option<AuditKey>) -> Self {
        self.key = key;
        self
    }

    /// The same log, handing each new head to `keeper`.
    pub fn with_keeper(mut self, keeper: Arc<dyn HeadKeeper>) -> Self {
        self.keeper = Some(keeper);
        self
    }

    /// Keeps the head that waits in this process (a record that is not durable, written since the
    /// keeper last kept one), syncing the log's file first. `verify` in this process calls it first;
    /// it happens too when the log is dropped or opened again.
    pub fn flush_head(&self) {
        if let Ok(mut open) = self.open.lock()
            && let Some(log) = open.as_mut()
        {
            log.flush();
        }
    }

    /// This handle's syncs, for tests.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> Arc<Syncs> {
        self.syncs.clone()
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

    /// Appends a typed record (see [`AuditRecord`](super::AuditRecord)); `durable` as in `append`. A
    /// record with nothing to cut (no string over 2 KiB, no array over 100 items) is serialized
    /// straight into its line, the same bytes as through a `Value`.
    pub fn record(&self, record: &super::AuditRecord, durable: bool) -> Result<u64, AuditError> {
        if record.fits(MAX_FIELD, &|v| fits(v, 0)) {
            return self.append_body(Body::Record(record), durable);
        }
        self.append(&record.to_value(), durable)
    }

    /// Appends one record (an object; `seq`, `ts` and `prev` are added). `durable` records are fsync'd
    /// before this returns (intents of side effects). Returns the record's `seq`.
    ///
    /// The file stays open between appends and the last record's `seq` and hash are remembered, so an
    /// append is a lock, two stats, a write and an unlock. The file is opened again when the path
    /// names another file (renamed, replaced, deleted) and its last line read again when its length is
    /// not the one this process left (another process appended, or it was cut).
    pub fn append(&self, fields: &Value, durable: bool) -> Result<u64, AuditError> {
        self.append_body(Body::Fields(fields), durable)
    }

    fn append_body(&self, fields: Body<'_>, durable: bool) -> Result<u64, AuditError> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| self.err(io::Error::other("the audit log's lock was poisoned")))?;
        // a rotation that failed is not tried again for this record
        let mut may_rotate = true;
        // each turn follows a rotation (this process's or another's); a few are plenty
        for _ in 0..8 {
            if open.is_none() {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| self.err(e))?;
                }
                let opened = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create_new(true)
                    .open(&self.path);
                let file = match opened {
                    Ok(file) => {
                        // a new `audit.jsonl` (the first, or the next after a rotation) survives a
                        // crash with the records written to it
                        sync_dir(&self.path);
                        file
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        match OpenOptions::new().read(true).append(true).open(&self.path) {
                            Ok(file) => file,
                            // rotated away by another process in between: make the next one
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(self.err(e)),
                        }
                    }
                    Err(e) => return Err(self.err(e)),
                };
                let m = file.metadata().map_err(|e| self.err(e))?;
                *open = Some(OpenLog {
                    file,
                    id: (m.dev(), m.ino()),
                    // no length is `u64::MAX`: the first append reads the last line
                    len: u64::MAX,
                    seq: 0,
                    prev: String::new(),
                    pending: None,
                    keeper: self.keeper.clone(),
                    syncs: self.syncs.clone(),
                });
            }
            let Some(log) = open.as_mut() else {
                return Err(self.err(io::Error::other("the audit log is not open")));
            };
            log.file.lock().map_err(|e| self.err(e))?;
            // under the lock, the path must still name the file this process holds open: it may have
            // been renamed (rotated), replaced or deleted since; then the record goes to the file now
            // at the path
            let still = std::fs::metadata(&self.path)
                .ok()
                .is_some_and(|m| (m.dev(), m.ino()) == log.id);
            let len = if still {
                log.file.metadata().map(|m| m.len()).ok()
            } else {
                None
            };
            let full = may_rotate
                && len.is_some_and(|l| self.rotate_bytes.is_some_and(|max| l >= max && l > 0));
            let Some(len) = len.filter(|_| !full) else {
                if still && full && self.rotate_locked().is_err() {
                    may_rotate = false;
                }
                let _ = log.file.unlock();
                *open = None;
                continue;
            };
            let result = self.append_locked(log, len, fields, durable);
            let _ = log.file.unlock();
            if result.is_err() {
                // whatever happened, the next append starts from the file, not from memory
                *open = None;
            }
            return result;
        }
        Err(self.err(io::Error::other(
            "the log was rotated under this process again and again; try again",
        )))
    }

    /// Renames `audit.jsonl` to the next `audit.<n>.jsonl`, under its lock. The next append makes a
    /// new `audit.jsonl` whose first record chains to the rotated file's last.
    fn rotate_locked(&self) -> io::Result<()> {
        let n = self.rotated_numbers().last().copied().unwrap_or(0) + 1;
        let to = self.rotated(n);
        if to.exists() {
            return Err(io::Error::other(format!(
                "cannot rotate: `{}` exists",
                to.display()
            )));
        }
        std::fs::rename(&self.path, &to)?;
        // the rename survives a crash before the next record is written
        sync_dir(&self.path);
        Ok(())
    }

    /// The last complete record of the newest rotated file (`None` when there is none): what an
    /// `audit.jsonl` that holds no record yet chains to.
    fn rotated_last_record(&self) -> io::Result<Option<RecordLine>> {
        match self.rotated_numbers().last() {
            None => Ok(None),
            Some(&n) => last_record(&mut File::open(self.rotated(n))?).map(|(l, _)| l),
        }
    }

    /// Writes one record to the locked log, whose length is `len`.
    fn append_locked(
        &self,
        log: &mut OpenLog,
        len: u64,
        fields: Body<'_>,
        durable: bool,
    ) -> Result<u64, AuditError> {
        let (seq, prev, terminated) = if len == log.len {
            (log.seq + 1, std::mem::take(&mut log.prev), true)
        } else {
            let (mut last, terminated) = last_record(&mut log.file).map_err(|e| self.err(e))?;
            if last.is_none() {
                // a file with no complete record yet (new after a rotation, or only a torn line) goes
                // on from the rotated file's last record, or starts the chain
                last = self.rotated_last_record().map_err(|e| self.err(e))?;
            }
            match last {
                None => (1, GENESIS.to_owned(), terminated),
                Some((last, seq)) => (seq + 1, sha_hex(&last), terminated),
            }
        };
        let ts = crate::ctx::now_rfc3339();
        // `{"seq":…,"ts":…,"prev":…,` then the fields in their order (bounded), as serde_json writes
        // the object with those keys first
        let mut line = Vec::with_capacity(1024);
        line.extend_from_slice(format!("{{\"seq\":{seq},\"ts\":").as_bytes());
        serde_json::to_writer(&mut line, &ts).map_err(|e| self.err(io::Error::other(e)))?;
        line.extend_from_slice(b",\"prev\":\"");
        line.extend_from_slice(prev.as_bytes());
        line.push(b'"');
        if let Body::Record(r) = fields {
            // `{"kind":…}` without its braces, after the fields the log adds
            let body = serde_json::to_vec(r).map_err(|e| self.err(io::Error::other(e)))?;
            if let Some(inner) = body.strip_prefix(b"{").and_then(|b| b.strip_suffix(b"}"))
                && !inner.is_empty()
            {
                line.push(b',');
                line.extend_from_slice(inner);
            }
        }
        if let Body::Fields(Value::Object(o)) = fields {
            for (k, v) in o {
                if matches!(k.as_str(), "seq" | "ts" | "prev" | "mac" | "hash") {
                    continue;
                }
                line.push(b',');
                serde_json::to_writer(&mut line, k).map_err(|e| self.err(io::Error::other(e)))?;
                line.push(b':');
                serde_json::to_writer(&mut line, &Bounded(v))
                    .map_err(|e| self.err(io::Error::other(e)))?;
            }
        }
        line.push(b'}');
        if let Some(key) = &self.key {
            // `mac` seals the record's bytes before it (with the closing brace), under the key
            let mac = seal_with(key, &line);
            line.pop();
            line.extend_from_slice(format!(",\"mac\":\"{mac}\"}}").as_bytes());
        }
        // seal the record: `hash` is the SHA-256 of the line's bytes before it (with the closing brace)
        let seal = sha_hex(&line);
        line.pop();
        line.extend_from_slice(format!(",\"hash\":\"{seal}\"}}\n").as_bytes());
        if !terminated {
            // a torn line from a crash stays where it is (verify notes it); start on a new line
            line.insert(0, b'\n');
        }
        log.file.write_all(&line).map_err(|e| self.err(e))?;
        if durable {
            log.file.sync_data().map_err(|e| self.err(e))?;
            log.syncs.synced(seq);
        }
        log.len = len + line.len() as u64;
        log.seq = seq;
        // the next record's `prev`: the hash of this line's bytes, as `last_record` would read them
        let written = line.strip_prefix(b"\n").unwrap_or(&line);
        log.prev = sha_hex(written.strip_suffix(b"\n").unwrap_or(written));
        if let Some(keeper) = &self.keeper {
            let head = Head {
                seq,
                hash: seal,
                ts,
            };
            // the head kept must name a record on disk: a durable one is; another waits, or, when
            // the keeper's group is due, the file is synced first (at most one sync per group)
            log.pending = None;
            if durable {
                keeper.keep(&head);
            } else if keeper.due() {
                log.sync_and_keep(head);
            } else {
                log.pending = Some(head);
            }
        }
        Ok(seq)
    }

    /// The last `n` records (unparseable lines are shown as `{"torn": "<text>"}`), across the rotated
    /// files when `audit.jsonl` holds fewer.
    pub fn tail(&self, n: usize) -> io::Result<Vec<Value>> {
        let mut out: std::collections::VecDeque<Value> = std::collections::VecDeque::new();
        for path in self.files().into_iter().rev() {
            if out.len() >= n {
                break;
            }
            let want = n - out.len();
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut ring = std::collections::VecDeque::with_capacity(want + 1);
            for line in BufReader::new(f).split(b'\n') {
                let line = line?;
                if line.is_empty() {
                    continue;
                }
                let v = serde_json::from_slice(&line)
                    .unwrap_or_else(|_| json!({"torn": String::from_utf8_lossy(&line)}));
                ring.push_back(v);
                if ring.len() > want {
                    ring.pop_front();
                }
            }
            for v in ring.into_iter().rev() {
                out.push_front(v);
            }
        }
        Ok(out.into())
    }

    /// Checks the whole chain. Reports the first bad record: unparseable, out of sequence, or not
    /// chained to the line before it. Torn lines that the chain goes on after are noted (`torn`).
    pub fn verify(&self) -> io::Result<Verified> {
        self.verify_with(&VerifyOptions::default())
    }

    /// [`verify`](Self::verify), then the log's end against `opts.anchor`: a log that ends before the
    /// head the store kept was cut (or emptied, or deleted), and so was one whose record at that `seq`
    /// has another hash (rewritten).
    pub fn verify_with(&self, opts: &VerifyOptions) -> io::Result<Verified> {
        self.verify_reading(opts.checkpoint.as_ref(), || opts.anchor.clone())
    }

    /// [`verify_with`](Self::verify_with), with the anchor read by `anchor` while the log is locked
    /// (the store's head then names no record past the snapshot verify reads).
    pub fn verify_reading(
        &self,
        checkpoint: Option<&Head>,
        anchor: impl Fn() -> Anchor,
    ) -> io::Result<Verified> {
        let (files, anchor) = self.snapshot(anchor)?;
        let opts = VerifyOptions {
            anchor,
            checkpoint: checkpoint.cloned(),
        };
        let opts = &opts;
        let mut found = Verified::default();
        let exists = !files.is_empty();
        let mut line_no = 0usize;
        let mut prev_hash = GENESIS.to_owned();
        // lines that do not parse, since the last good record: a crash's remnants when the next
        // record goes on from that one, else the first problem
        let mut torn: Vec<Torn> = Vec::new();
        let last_file = files.len().saturating_sub(1);
        // the rotated files, then `audit.jsonl`: one chain, `seq` and `prev` going on across files
        for (i, (path, f, len)) in files.into_iter().enumerate() {
            let file = path.display().to_string();
            found.files.push(file.clone());
            line_no = 0;
            let mut reader = BufReader::new(f.take(len));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = reader.read_until(b'\n', &mut buf)?;
                if n == 0 {
                    break;
                }
                line_no += 1;
                let expect_seq = found.records + 1;
                let terminated = buf.last() == Some(&b'\n');
                if terminated {
                    buf.pop();
                }
                if serde_json::from_slice::<serde::de::IgnoredAny>(&buf).is_err() {
                    torn.push(Torn {
                        file: file.clone(),
                        line: line_no,
                        after: found.records,
                        terminated,
                    });
                    continue;
                }
                // a rotated file's last line may lack its newline (torn, then rotated): the next
                // file goes on after it
                let whole = terminated || i < last_file;
                let message = match check_line(&buf, whole, expect_seq, &prev_hash) {
                    Ok((head, has_mac)) => match self
                        .check_mac(&buf, has_mac, expect_seq, &mut found.macs)
                        .or_else(|| against_anchor(&head, &opts.anchor))
                        .or_else(|| against_checkpoint(&head, opts.checkpoint.as_ref()))
                    {
                        None => {
                            prev_hash = sha_hex(&buf);
                            found.records = expect_seq;
                            found.last = Some(head);
                            found.note_torn(&mut torn);
                            continue;
                        }
                        Some(m) => m,
                    },
                    Err(m) => m,
                };
                // what does not parse was no crash's remnant when the record after it does not go
                // on from the one before it; else this record is the problem
                let replaced = torn
                    .first()
                    .filter(|_| !goes_on(&buf, expect_seq, &prev_hash))
                    .cloned();
                if replaced.is_none() {
                    found.note_torn(&mut torn);
                }
                found.problem = Some(match replaced {
                    Some(t) => Problem {
                        file: t.file,
                        line: t.line,
                        seq: expect_seq,
                        message: format!(
                            "record {expect_seq} is not valid JSON, and the record after it does not go on from record {} ({message}): a record was replaced, removed or inserted here",
                            t.after
                        ),
                    },
                    None => Problem {
                        file,
                        line: line_no,
                        seq: expect_seq,
                        message,
                    },
                });
                return Ok(found);
            }
        }
        // a line that does not parse with no record after it: torn at the end, or garbage
        if let Some(t) = torn.first() {
            let seq = t.after + 1;
            let what = if t.terminated {
                "is not valid JSON"
            } else {
                "is torn (cut off, no newline): the process likely died while writing it"
            };
            found.problem = Some(Problem {
                file: t.file.clone(),
                line: t.line,
                seq,
                message: format!("record {seq} {what}"),
            });
            return Ok(found);
        }
        self.check_end(&mut found, opts, exists, line_no);
        Ok(found)
    }

    /// The log as one moment left it, for `verify`: under a shared lock on `audit.jsonl` (appends and
    /// rotations take it exclusive), every file opened and the current one's length noted, and the
    /// anchor read. What is appended after is not read (the length), and a rotation after does not
    /// matter (the open files). Without an `audit.jsonl` (none yet, or a crash between a rotation's
    /// rename and the next record) there is nothing to lock: the anchor is read first, so it names no
    /// record the files opened after miss, and a file made since is not read.
    fn snapshot(&self, anchor: impl Fn() -> Anchor) -> io::Result<(Vec<Opened>, Anchor)> {
        let open_rotated = || -> io::Result<Vec<Opened>> {
            let mut out = Vec::new();
            for n in self.rotated_numbers() {
                let path = self.rotated(n);
                match File::open(&path) {
                    // a rotated file is never written again: read it whole
                    Ok(f) => out.push((path, f, u64::MAX)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        };
        // each turn follows a rotation between opening the path and locking it; a few are plenty
        for _ in 0..8 {
            let current = match File::open(&self.path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // nothing to lock: the anchor is read between two looks that find no log, so every
                    // record it counts had been rotated away (or there is none) and the rotated files
                    // listed after hold it; a log made meanwhile is read through the lock
                    let read = anchor();
                    match File::open(&self.path) {
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            return Ok((open_rotated()?, read));
                        }
                        _ => continue,
                    }
                }
                Err(e) => return Err(e),
            };
            current.lock_shared()?;
            let m = current.metadata()?;
            let still = std::fs::metadata(&self.path)
                .ok()
                .is_some_and(|p| (p.dev(), p.ino()) == (m.dev(), m.ino()));
            if !still {
                // rotated (or replaced) before the lock: take the file now at the path
                continue;
            }
            let mut files = open_rotated()?;
            files.push((self.path.clone(), current, m.len()));
            let anchor = anchor();
            if let Some((_, f, _)) = files.last() {
                f.unlock()?;
            }
            return Ok((files, anchor));
        }
        Err(io::Error::other(format!(
            "the audit log `{}` was rotated under `verify` again and again; try again",
            self.path.display()
        )))
    }

    /// A record's `mac`, counted; with the key, checked. Once one record has a `mac`, every later one
    /// must have one too (a record without it was written without the key, or forged).
    fn check_mac(&self, line: &[u8], has_mac: bool, seq: u64, macs: &mut Macs) -> Option<String> {
        let Some(key) = &self.key else {
            if has_mac {
                macs.sealed += 1;
            }
            return None;
        };
        macs.checked = true;
        if !has_mac {
            if macs.sealed > 0 {
                return Some(format!(
                    "record {seq} has no `mac` although records before it do: it was written without INFRA_AUDIT_KEY, or forged"
                ));
            }
            macs.unsealed += 1;
            return None;
        }
        // the `mac` must be the field just before `hash`, sealing every byte before it
        let carried = split_last(line, "hash").and_then(|(head, _)| {
            let (body, mac) = split_last(&head, "mac")?;
            Some((body, mac.to_vec()))
        });
        match carried {
            Some((body, mac)) if same_seal(seal_with(key, &body).as_bytes(), &mac) => {
                macs.sealed += 1;
                None
            }
            Some(_) => Some(format!(
                "record {seq}'s `mac` does not match its content: it was forged or rewritten (or sealed with another key)"
            )),
            None => Some(format!(
                "record {seq}'s `mac` is not where it is written (just before `hash`): the record was forged"
            )),
        }
    }

    /// The log's end against the store's head, after a clean chain of `found.records` records.
    fn check_end(&self, found: &mut Verified, opts: &VerifyOptions, exists: bool, lines: usize) {
        let n = found.records;
        let log = if !exists {
            format!("the audit log `{}` is missing", self.path.display())
        } else if n == 0 {
            format!("the audit log `{}` is empty", self.path.display())
        } else {
            format!("the audit log ends at record {n}")
        };
        let problem = |message: String| Problem {
            file: self.path.display().to_string(),
            line: lines + 1,
            seq: n + 1,
            message,
        };
        let macs = found.macs;
        if !macs.checked && macs.sealed > 0 {
            found.notes.push(format!(
                "{} records carry a `mac`; they were not checked (INFRA_AUDIT_KEY is not set here), so a record forged with a recomputed chain would pass",
                macs.sealed
            ));
        } else if macs.checked && macs.unsealed > 0 {
            found.notes.push(format!(
                "records 1 to {} carry no `mac` (written before INFRA_AUDIT_KEY was set); the {} after them are sealed and check",
                macs.unsealed, macs.sealed
            ));
        }
        if let Some(cp) = &opts.checkpoint {
            if cp.seq > n {
                let missing = if cp.seq == n + 1 {
                    format!("record {} is missing", cp.seq)
                } else {
                    format!("records {} to {} are missing", n + 1, cp.seq)
                };
                found.problem = Some(problem(format!(
                    "{log}, before the checkpoint's record {} (hash {}): {missing}; the log was cut, emptied or replaced since the checkpoint",
                    cp.seq, cp.hash
                )));
                return;
            }
            found.notes.push(format!(
                "the checkpoint's record {} is in the log with its hash",
                cp.seq
            ));
        }
        match &opts.anchor {
            Anchor::None => {}
            Anchor::NoStore => found
                .notes
                .push("there is no store, so the log's end was not compared with a kept head".into()),
            Anchor::Unreadable(e) => found.notes.push(format!(
                "the store could not be read ({e}), so the log's end was not compared with its head"
            )),
            Anchor::Store {
                head: Some(h), ..
            } if h.seq > n => {
                let missing = if h.seq == n + 1 {
                    format!("record {} is missing", h.seq)
                } else {
                    format!("records {} to {} are missing", n + 1, h.seq)
                };
                found.problem = Some(problem(format!(
                    "{log}, but the store's head is record {} (hash {}, written {}): {missing}; the log was cut, emptied or replaced",
                    h.seq, h.hash, h.ts
                )));
            }
            Anchor::Store {
                head: Some(h), ..
            } => {
                if h.seq < n {
                    found.notes.push(format!(
                        "records {} to {n} were written after the head the store kept (record {}): a process stopped before keeping its head, or the store is older than the log",
                        h.seq + 1,
                        h.seq
                    ));
                }
            }
            Anchor::Store { head: None, runs } if *runs > 0 && n == 0 => {
                found.problem = Some(problem(format!(
                    "{log}, but the store lists {runs} runs, and every run writes audit records: the log was emptied or deleted"
                )));
            }
            Anchor::Store { head: None, .. } => found.notes.push(
                "the store keeps no head yet (it does from the next record on), so the log's end was not compared".into(),
            ),
        }
    }
}

/// One line of the log against the chain so far: its head and whether it carries a `mac`, or why it
/// is bad.
fn check_line(
    buf: &[u8],
    terminated: bool,
    expect_seq: u64,
    prev_hash: &str,
) -> Result<(Head, bool), String> {
    let Ok(v) = serde_json::from_slice::<Value>(buf) else {
        return Err(format!("record {expect_seq} is not valid JSON"));
    };
    if !terminated {
        return Err(format!("record {expect_seq} is torn (no newline after it)"));
    }
    if !sealed(buf) {
        return Err(format!(
            "record {expect_seq} was changed after it was written (its `hash` does not match its content)"
        ));
    }
    if v.get("seq").and_then(Value::as_u64) != Some(expect_seq) {
        return Err(format!(
            "record {expect_seq} has seq {}",
            v.get("seq").unwrap_or(&Value::Null)
        ));
    }
    if v.get("prev").and_then(Value::as_str) != Some(prev_hash) {
        return Err(format!(
            "record {expect_seq} does not chain to the record before it (prev {} ≠ {prev_hash}): a record was changed, removed or inserted",
            v.get("prev").and_then(Value::as_str).unwrap_or("missing")
        ));
    }
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let head = Head {
        seq: expect_seq,
        hash: text("hash"),
        ts: text("ts"),
    };
    Ok((head, v.get("mac").is_some()))
}

/// Whether a record goes on from the chain so far (its `seq` and `prev`), whatever else is wrong with
/// it.
fn goes_on(buf: &[u8], expect_seq: u64, prev_hash: &str) -> bool {
    serde_json::from_slice::<Value>(buf).is_ok_and(|v| {
        v.get("seq").and_then(Value::as_u64) == Some(expect_seq)
            && v.get("prev").and_then(Value::as_str) == Some(prev_hash)
    })
}

/// Whether a good record contradicts a checkpoint (same `seq`, another hash).
fn against_checkpoint(head: &Head, checkpoint: Option<&Head>) -> Option<String> {
    match checkpoint {
        Some(cp) if cp.seq == head.seq && !cp.hash.eq_ignore_ascii_case(&head.hash) => {
            Some(format!(
                "record {} is not the checkpoint's (hash {} ≠ {}): the log was rewritten since the checkpoint",
                cp.seq, head.hash, cp.hash
            ))
        }
        _ => None,
    }
}

/// Whether a good record contradicts the head the store kept (same `seq`, another hash).
fn against_anchor(head: &Head, anchor: &Anchor) -> Option<String> {
    match anchor {
        Anchor::Store { head: Some(h), .. } if h.seq == head.seq && h.hash != head.hash => {
            Some(format!(
                "record {} is not the one the store kept as the head (hash {} ≠ {}, written {}): the log was rewritten",
                h.seq, head.hash, h.hash, h.ts
            ))
        }
        _ => None,
    }
}

/// One file of the log as `verify` reads it: its path, the file opened, and how much of it to read.
type Opened = (PathBuf, File, u64);

/// The result of [`Audit::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// Good records before the first problem (all of them when there is none).
    pub records: u64,
    pub problem: Option<Problem>,
    /// The last good record.
    pub last: Option<Head>,
    /// The records' seals.
    pub macs: Macs,
    /// What could not be checked, or looks odd without being wrong.
    pub notes: Vec<String>,
    /// Torn lines the chain goes on after (a crash's remnants), each also in `notes`.
    pub torn: Vec<Torn>,
    /// The files read, in order (rotated ones first).
    pub files: Vec<String>,
}

/// A line that does not parse, cut by a crash while it was written, after which the next record goes
/// on from the last complete one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// The file it is in.
    pub file: String,
    /// One-based line in that file.
    pub line: usize,
    /// The `seq` of the last complete record before it (0: none).
    pub after: u64,
    /// Whether a newline ends it (the one the next append put after it).
    pub terminated: bool,
}

/// The seals (`mac`) seen by [`Audit::verify`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Macs {
    /// Records that carry a `mac` (with the key: that checked).
    pub sealed: u64,
    /// Records at the start of the log that carry none (checked with the key only).
    pub unsealed: u64,
    /// Whether the key was there to check them.
    pub checked: bool,
}

impl Verified {
    /// Torn lines the chain went on after: kept, and noted for people.
    fn note_torn(&mut self, torn: &mut Vec<Torn>) {
        for t in torn.drain(..) {
            self.notes.push(format!(
                "line {} of `{}` is torn (cut off by a crash while it was written); the chain goes on after it from record {}, so no record is missing",
                t.line, t.file, t.after
            ));
            self.torn.push(t);
        }
    }

    /// The report as JSON (`problem` and `last` are `null` when there is none).
    pub fn to_json(&self) -> Value {
        json!({
            "intact": self.problem.is_none(),
            "records": self.records,
            "problem": self.problem.as_ref().map(|p| json!({"file": p.file, "line": p.line, "seq": p.seq, "message": p.message})),
            "last": self.last.as_ref().map(Head::to_json),
            "macs": {"sealed": self.macs.sealed, "checked": self.macs.checked},
            "notes": self.notes,
            "torn": self.torn.iter().map(|t| json!({"file": t.file, "line": t.line, "after": t.after})).collect::<Vec<_>>(),
            "files": self.files,
        })
    }
}

/// The first bad record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file it is in (`audit.jsonl`, or a rotated `audit.<n>.jsonl`).
    pub file: String,
    /// One-based line in that file.
    pub line: usize,
    pub seq: u64,
    pub message: String,
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
