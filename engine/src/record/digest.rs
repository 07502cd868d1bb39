//! The SHA-256 of a stream, off the writer's thread once the stream is large.
//!
//! Hashing (SHA-NI where the CPU has it, about 1.5 GB/s) is the largest cost of streaming an output
//! to an artifact: as much CPU as reading the pipe and writing the file together. [`StreamDigest`]
//! hashes on the caller's thread until `OFFLOAD_AFTER` bytes have gone through, so small outputs
//! start no thread; then it hands the hash state to a thread of its own and sends it the bytes in
//! owned chunks of at least `CHUNK` bytes, so reading, writing and hashing use two cores. The queue
//! holds at most `QUEUE` chunks: a caller faster than the hash waits for it, and memory stays
//! bounded. Bytes are hashed in the order they were given, so the digest is the one of the whole
//! stream, whichever thread computed it (tested against a one-shot hash over random cuts).
//!
//! Hashed chunks come back through [`StreamDigest::spare`], so a reader can fill them again rather than
//! allocate and copy. A thread that cannot be started leaves the hashing on the caller's thread.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Bytes hashed on the caller's thread before a thread takes over.
const OFFLOAD_AFTER: u64 = 1 << 20;
/// The smallest chunk sent to the hashing thread (smaller writes are gathered).
const CHUNK: usize = 64 * 1024;
/// Chunks waiting for the hashing thread at most.
const QUEUE: usize = 8;

/// The SHA-256 of bytes given in order, computed on a thread of its own once they are many.
#[derive(Debug)]
pub struct StreamDigest {
    state: State,
    /// Bytes given so far.
    seen: u64,
    /// No thread could be started: hash here to the end.
    stays: bool,
}

#[derive(Debug)]
enum State {
    /// Boxed: the writers holding a digest stay small.
    Here(Box<Sha256>),
    Away {
        /// Small writes gathered until they make a chunk.
        gather: Vec<u8>,
        to: SyncSender<Vec<u8>>,
        /// Chunks the thread has hashed, for the caller to fill again.
        back: Receiver<Vec<u8>>,
        done: JoinHandle<Sha256>,
    },
}

impl Default for StreamDigest {
    fn default() -> Self {
        StreamDigest {
            state: State::Here(Box::new(Sha256::new())),
            seen: 0,
            stays: false,
        }
    }
}

impl StreamDigest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next bytes, which the caller no longer needs (no copy when they go to the thread).
    pub fn update_owned(&mut self, bytes: Vec<u8>) {
        self.seen += bytes.len() as u64;
        self.offload_if_due();
        match &mut self.state {
            State::Here(h) => h.update(&bytes),
            State::Away { gather, to, .. } => {
                if gather.is_empty() && bytes.len() >= CHUNK {
                    send(to, bytes);
                } else {
                    gather.extend_from_slice(&bytes);
                    if gather.len() >= CHUNK {
                        send(to, std::mem::take(gather));
                    }
                }
            }
        }
    }

    /// Takes the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        self.offload_if_due();
        match &mut self.state {
            State::Here(h) => h.update(bytes),
            State::Away { gather, to, .. } => {
                gather.extend_from_slice(bytes);
                if gather.len() >= CHUNK {
                    send(to, std::mem::take(gather));
                }
            }
        }
    }

    /// A chunk the thread has hashed, if one is waiting: the caller may fill it and give it back, so a
    /// long stream reuses a few buffers.
    pub fn spare(&mut self) -> Option<Vec<u8>> {
        match &self.state {
            State::Away { back, .. } => back.try_recv().ok(),
            State::Here(_) => None,
        }
    }

    /// The digest of every byte given, as lowercase hex.
    pub fn finish(self) -> std::io::Result<String> {
        let h = match self.state {
            State::Here(h) => *h,
            State::Away {
                gather, to, done, ..
            } => {
                if !gather.is_empty() {
                    send(&to, gather);
                }
                // the queue closes: the thread hashes what is left in it and ends
                drop(to);
                done.join().map_err(|_| {
                    std::io::Error::other("the thread hashing the stream ended before its end")
                })?
            }
        };
        Ok(dsl::analyze::hex(&h.finalize()))
    }

    fn offload_if_due(&mut self) {
        if self.seen < OFFLOAD_AFTER || self.stays {
            return;
        }
        let State::Here(h) = &self.state else { return };
        let (to, from) = sync_channel::<Vec<u8>>(QUEUE);
        let (give_back, back) = sync_channel::<Vec<u8>>(QUEUE);
        let mut hasher = Sha256::clone(h);
        let started = std::thread::Builder::new()
            .name("infra-sha256".into())
            .spawn(move || {
                for chunk in from {
                    hasher.update(&chunk);
                    // for the caller to read into again; when it takes none, the chunk is freed
                    let _ = give_back.try_send(chunk);
                }
                hasher
            });
        match started {
            Ok(done) => {
                self.state = State::Away {
                    gather: Vec::new(),
                    to,
                    back,
                    done,
                }
            }
            // no thread: the hashing stays here, and no other start is tried
            Err(_) => self.stays = true,
        }
    }
}

/// Hands a chunk to the hashing thread, waiting while the queue is full. A thread that is gone can only
/// have panicked; `finish` reports it.
fn send(to: &SyncSender<Vec<u8>>, chunk: Vec<u8>) {
    let _ = to.send(chunk);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_shot(bytes: &[u8]) -> String {
        dsl::analyze::hex(&Sha256::digest(bytes))
    }

    #[test]
    fn small_streams_stay_on_the_callers_thread() {
        let mut d = StreamDigest::new();
        d.update(b"abc");
        d.update_owned(b"def".to_vec());
        assert!(matches!(d.state, State::Here(_)));
        assert_eq!(d.finish().expect("digest"), one_shot(b"abcdef"));
        assert_eq!(
            StreamDigest::new().finish().expect("digest"),
            one_shot(b""),
            "no bytes"
        );
    }

    #[test]
    fn hashed_chunks_come_back_to_be_filled_again() {
        let mut d = StreamDigest::new();
        let chunk = vec![7u8; 4 * CHUNK];
        for _ in 0..16 {
            d.update_owned(chunk.clone());
        }
        assert!(matches!(d.state, State::Away { .. }));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let back = loop {
            if let Some(b) = d.spare() {
                break b;
            }
            assert!(std::time::Instant::now() < deadline, "no chunk came back");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(back.capacity() >= 4 * CHUNK);
        // filled again and given back, it counts like any bytes
        let mut again = back;
        again.clear();
        again.extend_from_slice(&chunk);
        d.update_owned(again);
        let all: Vec<u8> = std::iter::repeat_n(&chunk, 17).flatten().copied().collect();
        assert_eq!(d.finish().expect("digest"), one_shot(&all));
    }

    #[test]
    fn a_large_stream_hashed_away_in_any_cuts_is_the_one_shot_digest() {
        // 3 MiB of varied bytes, cut at random places into owned and borrowed pieces from one byte
        // to past a chunk, so pieces are gathered, sent whole, and straddle the hand-over point
        let mut next = crate::record::below(0x5eed);
        let data: Vec<u8> = (0..3 << 20).map(|_| next(251) as u8).collect();
        let want = one_shot(&data);
        for round in 0..6 {
            let mut d = StreamDigest::new();
            let mut at = 0;
            while at < data.len() {
                let len = match next(4) {
                    0 => 1 + next(16),
                    1 => 1 + next(CHUNK),
                    _ => CHUNK + next(3 * CHUNK),
                }
                .min(data.len() - at);
                let piece = &data[at..at + len];
                if (round + at) % 2 == 0 {
                    d.update_owned(piece.to_vec());
                } else {
                    d.update(piece);
                }
                at += len;
            }
            assert!(matches!(d.state, State::Away { .. }), "round {round}");
            assert_eq!(d.finish().expect("digest"), want, "round {round}");
        }
    }
}
