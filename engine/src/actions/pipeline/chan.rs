//! The fixed-size buffer between a pipeline's source and its sink: a bounded channel of chunks. The
//! source writes into [`Tx`] (blocking when [`DEPTH`] chunks wait, so the sink paces the source); the
//! sink reads from [`Rx`], which counts, hashes and bounds what passes. The stream only ends well when
//! the source said so ([`Tx::finish`]): a source that stops for any other reason ends it with an error,
//! so a sink never commits a stream cut short.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::ErrorKind;
use crate::exec::CancelToken;

/// Bytes per chunk.
pub const CHUNK: usize = 256 * 1024;
/// Chunks that may wait between source and sink.
pub const DEPTH: usize = 4;

enum Msg {
    Data(Vec<u8>),
    End,
    Fail(String),
}

/// A bounded pipe: the source's end and the sink's end.
pub fn pipe(
    counter: Counter,
    limits: Limits,
    cancel: &CancelToken,
    deadline: Option<Instant>,
) -> (Tx, Rx<'_>) {
    let (tx, rx) = sync_channel(DEPTH);
    (
        Tx {
            tx,
            buf: Vec::with_capacity(CHUNK),
        },
        Rx {
            rx,
            cur: Vec::new(),
            pos: 0,
            ended: false,
            cancel,
            deadline,
            stats: Stats::new(counter, limits),
            progress: None,
            reported: None,
        },
    )
}

/// The source's end.
pub struct Tx {
    tx: SyncSender<Msg>,
    buf: Vec<u8>,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the sink stopped reading")
}

impl Tx {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.send(Msg::Data(full)).map_err(|_| gone())
    }

    /// The source read everything: the sink may commit once it has read it all.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_buf()?;
        self.tx.send(Msg::End).map_err(|_| gone())
    }

    /// The source failed: the sink sees an error and leaves its destination as it was.
    pub fn fail(self, why: String) {
        let _ = self.tx.send(Msg::Fail(why));
    }
}

impl Write for Tx {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How records are counted in the bytes that pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// CSV: newlines outside quotes; the first record is the header.
    Csv,
    /// One record per line.
    Lines,
    /// Bytes only.
    Raw,
}

/// `max_bytes` and `max_records`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_bytes: Option<u64>,
    pub max_records: Option<u64>,
}

/// What passed through the pipe.
#[derive(Debug)]
pub struct Stats {
    counter: Counter,
    limits: Limits,
    pub bytes: u64,
    hasher: Sha256,
    quoted: bool,
    newlines: u64,
    /// Bytes after the last newline (a last record without one).
    tail: bool,
    /// What stopped the stream on the sink's side (a limit, a cancel, the deadline), if anything did.
    pub stopped: Option<(ErrorKind, String)>,
    /// The source's error, if it failed.
    pub source_failed: Option<String>,
}

impl Stats {
    fn new(counter: Counter, limits: Limits) -> Self {
        Stats {
            counter,
            limits,
            bytes: 0,
            hasher: Sha256::new(),
            quoted: false,
            newlines: 0,
            tail: false,
            stopped: None,
            source_failed: None,
        }
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        self.bytes += data.len() as u64;
        self.hasher.update(data);
        match self.counter {
            Counter::Raw => {}
            Counter::Lines => {
                self.newlines += data.iter().filter(|b| **b == b'\n').count() as u64;
            }
            Counter::Csv => {
                for &b in data {
                    match b {
                        b'"' => self.quoted = !self.quoted,
                        b'\n' if !self.quoted => self.newlines += 1,
                        _ => {}
                    }
                }
            }
        }
        if let Some(&last) = data.last() {
            self.tail = last != b'\n';
        }
        if let Some(max) = self.limits.max_bytes
            && self.bytes > max
        {
            return Err(format!("the stream is larger than `max_bytes` ({max})"));
        }
        if let (Some(max), Some(n)) = (self.limits.max_records, self.records())
            && n > max
        {
            return Err(format!(
                "the stream has more than `max_records` ({max}) records"
            ));
        }
        Ok(())
    }

    /// Records seen so far (the CSV header is not one); `None` for raw bytes.
    pub fn records(&self) -> Option<u64> {
        let lines = self.newlines + u64::from(self.tail);
        match self.counter {
            Counter::Raw => None,
            Counter::Lines => Some(lines),
            Counter::Csv => Some(lines.saturating_sub(1)),
        }
    }

    /// The SHA-256 of every byte read, in hex.
    pub fn sha256(&self) -> String {
        dsl::analyze::hex(&self.hasher.clone().finalize())
    }
}

/// The sink's end.
pub struct Rx<'a> {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
    cancel: &'a CancelToken,
    deadline: Option<Instant>,
    stats: Stats,
    progress: Option<crate::actions::Advance<'a>>,
    reported: Option<Instant>,
}

/// How often progress is told, after the first data.
const REPORT_EVERY: Duration = Duration::from_secs(1);

impl<'a> Rx<'a> {
    /// Tells `to` how much has passed: at the first data, then at most once per [`REPORT_EVERY`].
    pub fn report_to(&mut self, to: Option<crate::actions::Advance<'a>>) {
        self.progress = to;
    }

    fn report(&mut self) {
        let Some(p) = self.progress else { return };
        if self.reported.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            return;
        }
        self.reported = Some(Instant::now());
        let bytes = self.stats.bytes;
        (p.0)(&match self.stats.records() {
            Some(r) => format!("{r} records, {bytes} bytes read"),
            None => format!("{bytes} bytes read"),
        });
    }
}

impl Rx<'_> {
    /// What passed, once the sink is done (the source sees the pipe closed).
    pub fn into_stats(self) -> Stats {
        self.stats
    }

    fn stop(&mut self, kind: ErrorKind, why: String) -> io::Error {
        self.stats.stopped = Some((kind, why.clone()));
        io::Error::other(why)
    }
}

impl Read for Rx<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = out.len().min(self.cur.len() - self.pos);
                out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.ended || out.is_empty() {
                return Ok(0);
            }
            if self.cancel.is_cancelled() {
                return Err(self.stop(ErrorKind::Cancelled, "cancelled".into()));
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(self.stop(
                    ErrorKind::Timeout,
                    "the pipeline ran past its timeout".into(),
                ));
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(Msg::Data(d)) => {
                    if let Err(why) = self.stats.feed(&d) {
                        return Err(self.stop(ErrorKind::TooLarge, why));
                    }
                    self.cur = d;
                    self.pos = 0;
                    self.report();
                }
                Ok(Msg::End) => self.ended = true,
                Ok(Msg::Fail(why)) => {
                    self.stats.source_failed = Some(why.clone());
                    return Err(io::Error::other(format!("the source failed: {why}")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let why = "the source stopped without finishing".to_owned();
                    self.stats.source_failed = Some(why.clone());
                    return Err(io::Error::other(why));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_across_chunks_and_limits_stop_the_stream() {
        let c = CancelToken::new();
        let (mut tx, mut rx) = pipe(Counter::Csv, Limits::default(), &c, None);
        std::thread::scope(|s| {
            s.spawn(move || {
                tx.write_all(b"a,b\n1,\"x\ny\"\n2,").expect("write");
                tx.write_all(b"z").expect("write");
                tx.finish().expect("finish");
            });
            let mut all = Vec::new();
            rx.read_to_end(&mut all).expect("read");
            assert_eq!(all, b"a,b\n1,\"x\ny\"\n2,z");
        });
        assert_eq!(rx.into_stats().records(), Some(2));

        let (mut tx, mut rx) = pipe(
            Counter::Lines,
            Limits {
                max_bytes: None,
                max_records: Some(1),
            },
            &c,
            None,
        );
        std::thread::scope(|s| {
            s.spawn(move || {
                let _ = tx.write_all(b"{}\n{}\n").and_then(|()| tx.finish());
            });
            let mut all = Vec::new();
            assert!(rx.read_to_end(&mut all).is_err());
        });
        assert!(rx.into_stats().stopped.is_some());
    }

    #[test]
    fn a_source_that_stops_without_finishing_is_an_error() {
        let c = CancelToken::new();
        let (tx, mut rx) = pipe(Counter::Raw, Limits::default(), &c, None);
        drop(tx);
        let mut all = Vec::new();
        assert!(rx.read_to_end(&mut all).is_err());
        assert!(rx.into_stats().source_failed.is_some());
    }
}
