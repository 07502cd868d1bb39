//! Artifacts: large outputs streamed to files in a run's directory, with their SHA-256, named
//! `artifact://runs/<runbook>/<stamp>-<short id>/<step>/<name>`; and bounded, contained reads of them.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::redact::{Redactor, StreamRedactor};

/// The URI scheme of artifacts.
pub const SCHEME: &str = "artifact://";
/// The most bytes one read returns.
pub const MAX_READ: u64 = 1024 * 1024;

/// A problem with an artifact URI or read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("`{0}` is not an artifact URI: it must start with `artifact://runs/`")]
    NotArtifact(String),
    #[error(
        "`{0}` is not allowed in an artifact URI: use the URI exactly as a result or `artifacts list` gave it"
    )]
    BadSegment(String),
    #[error("no artifact `{0}`")]
    NotFound(String),
    #[error("`{0}` resolves outside the artifacts directory")]
    Escapes(String),
    #[error("cannot read `{uri}`: {source}")]
    Io {
        uri: String,
        #[source]
        source: io::Error,
    },
}

/// A file being written as an artifact: bytes are redacted, hashed and counted as they stream through.
#[derive(Debug)]
pub struct ArtifactWriter {
    uri: String,
    path: PathBuf,
    file: File,
    hasher: Sha256,
    bytes: u64,
    redact: StreamRedactor,
}

/// A finished artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    pub uri: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

impl ArtifactRef {
    pub fn to_json(&self) -> Value {
        json!({"uri": self.uri, "bytes": self.bytes, "sha256": self.sha256})
    }
}

impl ArtifactWriter {
    /// Creates `<dir>/<name>`, named `<uri_base>/<name>`.
    pub fn create(
        dir: &Path,
        uri_base: &str,
        name: &str,
        redactor: Arc<Redactor>,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let file = File::create(&path)?;
        Ok(ArtifactWriter {
            uri: format!("{uri_base}/{name}"),
            path,
            file,
            hasher: Sha256::new(),
            bytes: 0,
            redact: StreamRedactor::new(redactor),
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.file.write_all(bytes)
    }

    /// Closes the artifact and returns its reference.
    pub fn finish(mut self) -> io::Result<ArtifactRef> {
        let rest = self.redact.finish();
        self.emit(&rest)?;
        self.file.flush()?;
        Ok(ArtifactRef {
            uri: self.uri,
            path: self.path,
            bytes: self.bytes,
            sha256: dsl::analyze::hex(&self.hasher.finalize()),
        })
    }
}

impl Write for ArtifactWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self.redact.push(buf);
        self.emit(&out)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Writes a whole value as a JSON artifact.
pub fn write_json(
    dir: &Path,
    uri_base: &str,
    name: &str,
    v: &Value,
    r: Arc<Redactor>,
) -> io::Result<ArtifactRef> {
    let mut w = ArtifactWriter::create(dir, uri_base, name, r)?;
    serde_json::to_writer_pretty(&mut w, v).map_err(io::Error::other)?;
    w.finish()
}

/// The file behind an artifact URI, refusing anything that is not plainly inside `<root>/runs`.
pub fn resolve(root: &Path, uri: &str) -> Result<PathBuf, ArtifactError> {
    let rest = uri
        .strip_prefix(SCHEME)
        .ok_or_else(|| ArtifactError::NotArtifact(uri.to_owned()))?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.first() != Some(&"runs") {
        return Err(ArtifactError::NotArtifact(uri.to_owned()));
    }
    for s in &segments {
        if s.is_empty() || *s == "." || *s == ".." || s.contains('\\') || s.contains('\0') {
            return Err(ArtifactError::BadSegment(if s.is_empty() {
                "//".to_owned()
            } else {
                (*s).to_owned()
            }));
        }
    }
    let runs = root.join("runs");
    let path = root.join(rest);
    let canonical_runs = runs
        .canonicalize()
        .map_err(|_| ArtifactError::NotFound(uri.to_owned()))?;
    let canonical = path
        .canonicalize()
        .map_err(|_| ArtifactError::NotFound(uri.to_owned()))?;
    if !canonical.starts_with(&canonical_runs) {
        return Err(ArtifactError::Escapes(uri.to_owned()));
    }
    Ok(canonical)
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// At a byte offset.
    Offset(u64),
    /// The last bytes of the file.
    Tail,
}

/// A bounded read of one artifact.
pub fn read(
    root: &Path,
    uri: &str,
    from: From,
    max_bytes: u64,
    redactor: &Redactor,
) -> Result<Value, ArtifactError> {
    let path = resolve(root, uri)?;
    let io = |source| ArtifactError::Io {
        uri: uri.to_owned(),
        source,
    };
    if path.is_dir() {
        return Err(ArtifactError::NotFound(uri.to_owned()));
    }
    let mut f = File::open(&path).map_err(io)?;
    let total = f.metadata().map_err(io)?.len();
    let max = max_bytes.clamp(1, MAX_READ);
    let start = match from {
        From::Offset(o) => o.min(total),
        From::Tail => total.saturating_sub(max),
    };
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut buf = Vec::with_capacity(max.min(total - start) as usize);
    f.take(max).read_to_end(&mut buf).map_err(io)?;
    let text = String::from_utf8_lossy(&buf);
    let text = redactor.redact(&text).into_owned();
    let end = start + buf.len() as u64;
    Ok(json!({
        "uri": uri,
        "offset": start,
        "bytes": buf.len(),
        "total_bytes": total,
        "truncated": start > 0 || end < total,
        "next_offset": (end < total).then_some(end),
        "text": text,
    }))
}

/// Artifacts under `<root>/runs`, newest first.
pub fn list(root: &Path, limit: usize) -> io::Result<Vec<Value>> {
    let runs = root.join("runs");
    let mut found: Vec<(std::time::SystemTime, String, u64)> = Vec::new();
    let mut stack = vec![runs.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            let path = e.path();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && path.file_name().is_some_and(|n| n != "journal.jsonl") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                found.push((
                    meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                    format!("{SCHEME}{rel}"),
                    meta.len(),
                ));
            }
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(found
        .into_iter()
        .take(limit)
        .map(|(_, uri, bytes)| json!({"uri": uri, "bytes": bytes}))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, ArtifactRef) {
        let dir = tempfile::tempdir().expect("tmp");
        let run = dir.path().join("runs/rb/2026-01-01T000000Z-abcd1234/step");
        let r = Arc::new(Redactor::new());
        r.add("sekrit-value");
        let mut w = ArtifactWriter::create(
            &run,
            "artifact://runs/rb/2026-01-01T000000Z-abcd1234/step",
            "stdout",
            r,
        )
        .expect("create");
        w.write_all(b"line one\nthe sekrit-").expect("write");
        w.write_all(b"value here\n").expect("write");
        let a = w.finish().expect("finish");
        (dir, a)
    }

    #[test]
    fn writes_hash_and_redact_as_they_stream() {
        let (_dir, a) = setup();
        let text = std::fs::read_to_string(&a.path).expect("read");
        assert_eq!(text, "line one\nthe [REDACTED] here\n");
        assert_eq!(a.bytes, text.len() as u64);
        assert_eq!(
            a.sha256,
            dsl::analyze::hex(&Sha256::digest(text.as_bytes()))
        );
    }

    #[test]
    fn reads_are_bounded_and_contained() {
        let (dir, a) = setup();
        let r = Redactor::new();
        let v = read(dir.path(), &a.uri, From::Offset(5), 3, &r).expect("read");
        assert_eq!(v["text"], "one");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["next_offset"], 8);
        let t = read(dir.path(), &a.uri, From::Tail, 5, &r).expect("tail");
        assert_eq!(t["text"], "here\n");
        for bad in [
            "artifact://runs/../audit.jsonl",
            "artifact://runs/rb//x",
            "artifact:///etc/passwd",
            "file:///etc/passwd",
            "artifact://runs/rb/./x",
        ] {
            assert!(
                read(dir.path(), bad, From::Offset(0), 10, &r).is_err(),
                "{bad}"
            );
        }
        std::os::unix::fs::symlink("/etc", dir.path().join("runs/rb/out")).expect("symlink");
        let e = read(
            dir.path(),
            "artifact://runs/rb/out/hostname",
            From::Offset(0),
            10,
            &r,
        )
        .expect_err("escape");
        assert!(
            matches!(e, ArtifactError::Escapes(_) | ArtifactError::NotFound(_)),
            "{e}"
        );
        let listed = list(dir.path(), 10).expect("list");
        assert_eq!(listed[0]["uri"], a.uri);
    }
}
