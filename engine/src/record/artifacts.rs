//! Artifacts: large outputs streamed to files in a run's directory, with their SHA-256, named
//! `artifact://runs/<runbook>/<stamp>-<short id>/<step>/<name>`; and bounded, contained reads of
//! them.
//!
//! `ArtifactWriter` redacts through a `StreamRedactor`, hashes and counts what it writes; the
//! caller creates it on the first byte, so an empty stream leaves no file. `write_json` writes a
//! whole value (an MCP result over its budget) the same way.
//!
//! Every artifact read goes through `open` (`artifacts get|tail`, `resources/read`, `jobs logs`,
//! `stdin_ref`): empty, `.`, `..`, backslash or NUL segments are refused; the root is opened by its
//! path, then `runs/…` below it by `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or,
//! where the kernel lacks it, by `walk`, one `openat(O_NOFOLLOW)` per component. A link is
//! `ArtifactError::Link`, anything but a regular file is not found, and `O_NONBLOCK` keeps a FIFO
//! from hanging. `read` takes an offset or a tail from that descriptor, at most `MAX_READ` (1 MiB).
//! `list` walks `runs/` with an explicit stack, newest first.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde_json::{Value, json};

use super::digest::StreamDigest;
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
    #[error("`{0}` passes through a symbolic link; artifact reads follow none")]
    Link(String),
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
    digest: StreamDigest,
    bytes: u64,
    /// `None` for a stream its writer masked already (`create_masked`).
    redact: Option<StreamRedactor>,
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
        Self::open(dir, uri_base, name, Some(StreamRedactor::new(redactor)))
    }

    /// As [`ArtifactWriter::create`], for bytes its caller has masked already (a process's output,
    /// whose kept part must be the artifact's first bytes, masked alike).
    pub fn create_masked(dir: &Path, uri_base: &str, name: &str) -> io::Result<Self> {
        Self::open(dir, uri_base, name, None)
    }

    fn open(
        dir: &Path,
        uri_base: &str,
        name: &str,
        redact: Option<StreamRedactor>,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let file = File::create(&path)?;
        Ok(ArtifactWriter {
            uri: format!("{uri_base}/{name}"),
            path,
            file,
            digest: StreamDigest::new(),
            bytes: 0,
            redact,
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Writes bytes the redactor let through, then hands them to the digest.
    fn emit(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        self.file.write_all(&bytes)?;
        self.bytes += bytes.len() as u64;
        self.digest.update_owned(bytes);
        Ok(())
    }

    /// Writes bytes the caller gives up (no copy while no secret is known).
    pub fn write_owned(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        let out = match &mut self.redact {
            Some(r) => r.push_owned(bytes),
            None => bytes,
        };
        self.emit(out)
    }

    /// A buffer the digest is done with, to read the next bytes into.
    pub fn spare(&mut self) -> Option<Vec<u8>> {
        self.digest.spare()
    }

    /// Closes the artifact and returns its reference. An artifact that cannot be finished is removed:
    /// no file is left that no result describes.
    pub fn finish(mut self) -> io::Result<ArtifactRef> {
        let rest = self.redact.as_mut().map(StreamRedactor::finish);
        let closed = rest
            .map_or(Ok(()), |r| self.emit(r))
            .and_then(|()| self.file.flush());
        let path = self.path;
        let sha256 = closed.and_then(|()| self.digest.finish());
        // closed explicitly: where a write fails only at close (NFS, a quota), the digest would
        // name bytes that are not in the file
        let closed = nix::unistd::close(OwnedFd::from(self.file)).map_err(io::Error::from);
        match sha256.and_then(|h| closed.map(|()| h)) {
            Ok(sha256) => Ok(ArtifactRef {
                sha256,
                uri: self.uri,
                path,
                bytes: self.bytes,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Gives the artifact up after a failed write: its file is removed.
    pub fn abandon(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Write for ArtifactWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = match &mut self.redact {
            Some(r) => r.push(buf),
            None => buf.to_vec(),
        };
        self.emit(out)?;
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
    // serde writes token by token: gather them, so the redactor and the file see large writes
    let mut buffered = io::BufWriter::with_capacity(64 * 1024, &mut w);
    serde_json::to_writer_pretty(&mut buffered, v).map_err(io::Error::other)?;
    buffered.flush()?;
    drop(buffered);
    w.finish()
}

/// The path of an artifact URI below the artifacts root (`runs/…`), refusing anything that is not a
/// plain relative path there.
pub fn relative(uri: &str) -> Result<&str, ArtifactError> {
    let rest = uri
        .strip_prefix(SCHEME)
        .ok_or_else(|| ArtifactError::NotArtifact(uri.to_owned()))?;
    if rest.split('/').next() != Some("runs") {
        return Err(ArtifactError::NotArtifact(uri.to_owned()));
    }
    for s in rest.split('/') {
        if s.is_empty() || s == "." || s == ".." || s.contains('\\') || s.contains('\0') {
            return Err(ArtifactError::BadSegment(if s.is_empty() {
                "//".to_owned()
            } else {
                s.to_owned()
            }));
        }
    }
    Ok(rest)
}

/// Opens the artifact a URI names, for reading. The root (`MCP_CONTEXT_REPO_ROOT` or the profiles
/// directory, as configured) is opened by its path; from there on no symbolic link is followed at any
/// component, `runs` included, so swapping a directory of `runs/` for a link while a read resolves it
/// cannot make the read leave the root. Sizes, offsets and tails are then taken from the returned
/// descriptor, never from the path again.
pub fn open(root: &Path, uri: &str) -> Result<File, ArtifactError> {
    open_with(root, uri, true)
}

/// [`open`], through `openat2` when `kernel` (and the kernel offers it), else by [`walk`].
fn open_with(root: &Path, uri: &str, kernel: bool) -> Result<File, ArtifactError> {
    use nix::errno::Errno;
    let rel = relative(uri)?;
    let fail = |e: Errno| match e {
        Errno::ELOOP => ArtifactError::Link(uri.to_owned()),
        Errno::EXDEV => ArtifactError::Escapes(uri.to_owned()),
        Errno::ENOENT | Errno::ENOTDIR => ArtifactError::NotFound(uri.to_owned()),
        other => ArtifactError::Io {
            uri: uri.to_owned(),
            source: io::Error::from(other),
        },
    };
    let dir = nix::fcntl::open(root, dir_flags() & !OFlag::O_NOFOLLOW, Mode::empty())
        .map_err(|_| ArtifactError::NotFound(uri.to_owned()))?;
    let fd = match kernel.then(|| beneath(&dir, rel)).flatten() {
        Some(Ok(fd)) => fd,
        Some(Err(e)) => return Err(fail(e)),
        // no openat2 here: the same refusals, one component at a time
        None => walk(&dir, rel).map_err(fail)?,
    };
    let file = File::from(fd);
    let meta = file.metadata().map_err(|source| ArtifactError::Io {
        uri: uri.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ArtifactError::NotFound(uri.to_owned()));
    }
    Ok(file)
}

/// Opens a directory on the way: never through a link.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens the file itself: never through a link, and never waiting (a FIFO in its place does not
/// block the read; it is then refused as not a file).
fn file_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY
}

/// `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: the kernel resolves the whole path below
/// `dir` and fails on any link. `None` when this kernel (before 5.6) or a seccomp filter does not
/// offer the call.
#[cfg(target_os = "linux")]
fn beneath(dir: &OwnedFd, rel: &str) -> Option<Result<OwnedFd, nix::errno::Errno>> {
    use nix::errno::Errno;
    use nix::fcntl::{OpenHow, ResolveFlag};
    let how = OpenHow::new().flags(file_flags()).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    match nix::fcntl::openat2(dir, rel, how) {
        Err(Errno::ENOSYS | Errno::EPERM | Errno::E2BIG) => None,
        // the kernel refuses while another process renames under the path; try again once
        Err(Errno::EAGAIN) => Some(nix::fcntl::openat2(dir, rel, how)),
        r => Some(r),
    }
}

#[cfg(not(target_os = "linux"))]
fn beneath(_dir: &OwnedFd, _rel: &str) -> Option<Result<OwnedFd, nix::errno::Errno>> {
    None
}

/// Opens `rel` below `dir` one component at a time with `O_NOFOLLOW`, each directory from the
/// descriptor of the one before it.
fn walk(dir: &OwnedFd, rel: &str) -> Result<OwnedFd, nix::errno::Errno> {
    let mut segments = rel.split('/').peekable();
    let mut held: Option<OwnedFd> = None;
    while let Some(seg) = segments.next() {
        let at = held.as_ref().unwrap_or(dir);
        if segments.peek().is_none() {
            return nix::fcntl::openat(at, seg, file_flags(), Mode::empty());
        }
        held = Some(
            nix::fcntl::openat(at, seg, dir_flags(), Mode::empty()).map_err(|e| {
                // `O_DIRECTORY` answers a link with ENOTDIR; say it was a link
                let link =
                    nix::sys::stat::fstatat(at, seg, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| {
                            let kind = nix::sys::stat::SFlag::S_IFMT.bits() & st.st_mode;
                            kind == nix::sys::stat::SFlag::S_IFLNK.bits()
                        });
                if e == nix::errno::Errno::ENOTDIR && link {
                    nix::errno::Errno::ELOOP
                } else {
                    e
                }
            })?,
        );
    }
    Err(nix::errno::Errno::ENOENT)
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
    let mut f = open(root, uri)?;
    let io = |source| ArtifactError::Io {
        uri: uri.to_owned(),
        source,
    };
    let total = f.metadata().map_err(io)?.len();
    let (start, max) = window(total, from, max_bytes);
    let end = (start + max).min(total);
    // the bytes around the window too, so a secret it cuts is found whole
    let margin = redactor.longest().saturating_sub(1) as u64;
    let from = start.saturating_sub(margin);
    let to = (end + margin).min(total);
    f.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut buf = Vec::with_capacity((to - from) as usize);
    f.take(to - from).read_to_end(&mut buf).map_err(io)?;
    let at = (start - from) as usize;
    let window = at..(at + (end - start) as usize).min(buf.len());
    Ok(envelope(uri, start, &buf, window, total, redactor))
}

/// Where a bounded read of `total` bytes starts, and how much it may take.
fn window(total: u64, from: From, max_bytes: u64) -> (u64, u64) {
    let max = max_bytes.clamp(1, MAX_READ);
    let start = match from {
        From::Offset(o) => o.min(total),
        From::Tail => total.saturating_sub(max),
    };
    (start, max)
}

/// A bounded read of a text made on request (a run's listing, or a journal kept with others), in the
/// shape [`read`] gives.
pub fn read_text(uri: &str, text: &[u8], from: From, max_bytes: u64, redactor: &Redactor) -> Value {
    let total = text.len() as u64;
    let (start, max) = window(total, from, max_bytes);
    let end = (start + max).min(total);
    envelope(
        uri,
        start,
        text,
        start as usize..end as usize,
        total,
        redactor,
    )
}

/// What a read returns: the bytes `window` of `buf` (which starts at `start` in the file) as text,
/// every secret touching them masked (`buf` around the window lets one it cuts be found whole), and
/// where the rest is.
fn envelope(
    uri: &str,
    start: u64,
    buf: &[u8],
    window: std::ops::Range<usize>,
    total: u64,
    redactor: &Redactor,
) -> Value {
    let len = window.len();
    let masked = redactor.redact_window(buf, window);
    let text = String::from_utf8_lossy(&masked).into_owned();
    let end = start + len as u64;
    json!({
        "uri": uri,
        "offset": start,
        "bytes": len,
        "total_bytes": total,
        "truncated": start > 0 || end < total,
        "next_offset": (end < total).then_some(end),
        "text": text,
    })
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
                // a dot directory is infra's own (`runs/.calls/`, the journals of single calls)
                if !e.file_name().to_string_lossy().starts_with('.') {
                    stack.push(path);
                }
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
    use crate::record::redact::MASK;
    use sha2::{Digest, Sha256};

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
    fn a_read_window_that_cuts_a_secret_shows_none_of_it() {
        // written before the secret was known: only the read can mask it
        let dir = tempfile::tempdir().expect("tmp");
        let run = dir.path().join("runs/rb/2026-01-01T000000Z-abcd1234/step");
        let uri = "artifact://runs/rb/2026-01-01T000000Z-abcd1234/step";
        let mut w =
            ArtifactWriter::create(&run, uri, "stdout", Arc::new(Redactor::new())).expect("create");
        let secret = "late-known-Zq8x";
        let text = format!("aa {secret} bb {secret}");
        w.write_all(text.as_bytes()).expect("write");
        let a = w.finish().expect("finish");
        let r = Redactor::new();
        r.add(secret);
        let hits: Vec<_> = text.match_indices(secret).map(|(i, _)| i).collect();
        for start in 0..text.len() {
            for max in 1..=text.len() - start {
                let v = read(
                    dir.path(),
                    &a.uri,
                    From::Offset(start as u64),
                    max as u64,
                    &r,
                )
                .expect("read");
                let end = start + max;
                // each occurrence the window touches becomes one mask; the rest is shown as it is
                let mut want = String::new();
                let mut at = start;
                for &h in &hits {
                    let (s, e) = (h, h + secret.len());
                    if e <= start || s >= end {
                        continue;
                    }
                    want.push_str(&text[at..s.max(at)]);
                    want.push_str(MASK);
                    at = e.min(end);
                }
                want.push_str(&text[at..end]);
                assert_eq!(v["text"], want, "window {start}..{end}");
                assert_eq!(v["bytes"], max);
                let t = read_text(
                    &a.uri,
                    text.as_bytes(),
                    From::Offset(start as u64),
                    max as u64,
                    &r,
                );
                assert_eq!(t["text"], want, "text window {start}..{end}");
            }
        }
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
        assert!(matches!(e, ArtifactError::Link(_)), "{e}");
        let listed = list(dir.path(), 10).expect("list");
        assert_eq!(listed[0]["uri"], a.uri);
    }

    type Opener = fn(&Path, &str) -> Result<File, ArtifactError>;
    type ReadAll<'a> = &'a dyn Fn(&Path, &str) -> Result<Vec<u8>, ArtifactError>;

    /// Every way to open: the kernel's `openat2`, and the component walk used where it is missing.
    fn openers() -> [(&'static str, Opener); 2] {
        [
            ("openat2", |root, uri| open_with(root, uri, true)),
            ("walk", |root, uri| open_with(root, uri, false)),
        ]
    }

    #[test]
    fn links_are_refused_even_when_they_point_inside_the_runs() {
        let (dir, a) = setup();
        let run = dir.path().join("runs/rb/2026-01-01T000000Z-abcd1234");
        std::os::unix::fs::symlink(&run, dir.path().join("runs/rb/alias")).expect("symlink");
        std::os::unix::fs::symlink(&a.path, run.join("step/copy")).expect("symlink");
        let r = Redactor::new();
        for uri in [
            "artifact://runs/rb/alias/step/stdout",
            "artifact://runs/rb/2026-01-01T000000Z-abcd1234/step/copy",
        ] {
            let e = read(dir.path(), uri, From::Offset(0), 10, &r).expect_err(uri);
            assert!(matches!(e, ArtifactError::Link(_)), "{uri}: {e}");
            for (how, opener) in openers() {
                let e = opener(dir.path(), uri).expect_err(uri);
                assert!(matches!(e, ArtifactError::Link(_)), "{how} {uri}: {e}");
            }
        }
        // `runs` itself is below the root too
        let other = tempfile::tempdir().expect("tmp");
        std::os::unix::fs::symlink(dir.path().join("runs"), other.path().join("runs"))
            .expect("symlink");
        for (how, opener) in openers() {
            let e = opener(other.path(), &a.uri).expect_err("runs as a link");
            assert!(matches!(e, ArtifactError::Link(_)), "{how}: {e}");
            assert_eq!(
                opener(dir.path(), &a.uri)
                    .map(|f| f.metadata().map(|m| m.len()).ok())
                    .ok(),
                Some(Some(a.bytes)),
                "{how} opens the plain path"
            );
        }
    }

    #[test]
    fn a_fifo_in_place_of_an_artifact_is_refused_without_waiting() {
        let (dir, _a) = setup();
        let fifo = dir
            .path()
            .join("runs/rb/2026-01-01T000000Z-abcd1234/step/stderr");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let e = read(
            dir.path(),
            "artifact://runs/rb/2026-01-01T000000Z-abcd1234/step/stderr",
            From::Offset(0),
            10,
            &Redactor::new(),
        )
        .expect_err("not a file");
        assert!(matches!(e, ArtifactError::NotFound(_)), "{e}");
    }

    /// Reads `artifact://runs/rb/x/stdout` thousands of times while another thread keeps swapping
    /// `runs/rb/x` between a directory and a link to a directory outside the root holding a canary.
    fn swapped_reads(read_all: ReadAll<'_>) {
        use std::sync::atomic::{AtomicBool, Ordering};
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        let rb = root.join("runs/rb");
        std::fs::create_dir_all(rb.join("real")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(rb.join("real/stdout"), "inside\n").expect("write");
        std::fs::write(outside.join("stdout"), "CANARY outside the root\n").expect("write");
        std::os::unix::fs::symlink(&outside, rb.join("link")).expect("symlink");
        let stop = AtomicBool::new(false);
        let (mut canary, mut inside, mut other) = (0usize, 0usize, Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                let (real, link, x) = (rb.join("real"), rb.join("link"), rb.join("x"));
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::fs::rename(&real, &x);
                    let _ = std::fs::rename(&x, &real);
                    let _ = std::fs::rename(&link, &x);
                    let _ = std::fs::rename(&x, &link);
                }
            });
            for _ in 0..5000 {
                match read_all(&root, "artifact://runs/rb/x/stdout") {
                    Ok(bytes) if bytes.windows(6).any(|w| w == b"CANARY") => canary += 1,
                    Ok(bytes) if bytes == b"inside\n" => inside += 1,
                    Ok(bytes) => other.push(String::from_utf8_lossy(&bytes).into_owned()),
                    Err(ArtifactError::NotFound(_) | ArtifactError::Link(_)) => {}
                    Err(e) => other.push(e.to_string()),
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(
            canary, 0,
            "reads returned bytes from outside ({inside} inside)"
        );
        assert!(other.is_empty(), "{other:?}");
    }

    #[test]
    fn a_directory_swapped_for_a_link_never_yields_outside_bytes() {
        let r = Redactor::new();
        swapped_reads(&|root, uri| {
            read(root, uri, From::Offset(0), 1024, &r)
                .map(|v| v["text"].as_str().unwrap_or_default().as_bytes().to_vec())
        });
        swapped_reads(&|root, uri| {
            let mut bytes = Vec::new();
            open_with(root, uri, false)?
                .read_to_end(&mut bytes)
                .map_err(|source| ArtifactError::Io {
                    uri: uri.to_owned(),
                    source,
                })?;
            Ok(bytes)
        });
    }
}
