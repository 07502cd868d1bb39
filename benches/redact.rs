//! Redaction speed: 1 GiB of command-like output through the stream redactor with no secret, one, and
//! twenty (each with its encoded forms), in 64 KiB chunks as a capture reads them, plus a plain copy
//! of the same bytes as the baseline. Run with `cargo bench --bench redact`.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::record::Redactor;
use engine::record::redact::StreamRedactor;

const CHUNK: usize = 64 * 1024;
const TOTAL: usize = 1 << 30;

/// Log-like text with no secret in it.
fn chunk() -> Vec<u8> {
    let line =
        b"2026-12-05T14:44:16Z INFO request served path=/api/v1/items status=200 bytes=5123 ms=3\n";
    line.iter().copied().cycle().take(CHUNK).collect()
}

fn through(r: &Arc<Redactor>, data: &[u8]) -> (Duration, usize) {
    let mut s = StreamRedactor::new(r.clone());
    let mut out = 0usize;
    let t = Instant::now();
    for _ in 0..TOTAL / CHUNK {
        out += s.push(data).len();
    }
    out += s.finish().len();
    (t.elapsed(), out)
}

fn main() {
    let data = chunk();
    let t = Instant::now();
    let mut sink = Vec::with_capacity(CHUNK);
    let mut copied = 0usize;
    for _ in 0..TOTAL / CHUNK {
        sink.clear();
        sink.extend_from_slice(std::hint::black_box(&data));
        copied += std::hint::black_box(&sink).len();
    }
    let copy = t.elapsed();
    println!(
        "copy 1 GiB in 64 KiB chunks: {:8.1} ms ({} bytes)",
        copy.as_secs_f64() * 1e3,
        copied
    );
    let none = Arc::new(Redactor::new());
    let (base, _) = through(&none, &data);
    println!(
        "no secret:   {:8.1} ms  {:6.0} MiB/s",
        base.as_secs_f64() * 1e3,
        1024.0 / base.as_secs_f64()
    );
    for n in [1usize, 20] {
        let r = Arc::new(Redactor::new());
        for i in 0..n {
            r.add(&format!("s3cr3t-token-{i:02}-Zq8x/+ %!"));
        }
        let (d, out) = through(&r, &data);
        assert_eq!(out, TOTAL, "nothing was masked, nothing lost");
        println!(
            "{n:>2} secret(s): {:8.1} ms  {:6.0} MiB/s  {:.2}× the no-secret time",
            d.as_secs_f64() * 1e3,
            1024.0 / d.as_secs_f64(),
            d.as_secs_f64() / base.as_secs_f64()
        );
    }
}
