//! Engine overhead: chains of `state.set` (writes: an fsync'd intent each) and `state.get` nodes (10
//! to 100,000), a chain of `local.exec true` against
//! spawning `true` directly (and against spawning it after one fdatasync'd append each, the floor
//! of a step whose intent is durable, and against a bash loop of `/bin/true`; five interleaved rounds
//! of the four, ratios per round and of the fastest rounds), and 1 GiB of stdout captured with no secret known and with 20, against
//! `head … | cat > file` (three interleaved rounds: the capture's ratio to the pipe, the ratio with
//! secrets to without, and peak memory). Run with `cargo bench --bench engine`.
//!
//! Each measurement runs in its own child process (this binary with `--one …`) so peak RSS is its own.

#![allow(clippy::print_stdout)]

mod common;
use common::{cpu_ms, peak_rss_kib};

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::ctx::Config;
use engine::run::{Engine, RunOptions};

fn engine(dir: &std::path::Path) -> Engine {
    let mut c = Config::at(dir);
    c.unsafe_local = true;
    Engine::new(c, Arc::new(engine::Catalog::builtin()))
}

fn run(e: &Engine, yaml: &str) -> Duration {
    let file = dsl::SourceFile::new("bench.yaml", yaml.to_owned());
    let loaded = dsl::load(&file, None);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics.first());
    let rb = Arc::new(loaded.runbooks.into_iter().next().expect("runbook"));
    let plan = engine::compile(rb, &engine::CompileOptions::default()).expect("compiles");
    let t = Instant::now();
    let o = e.execute(&plan, serde_json::Map::new(), &RunOptions::default());
    let d = t.elapsed();
    assert!(o.ok(), "{:?}", o.error);
    d
}

/// The smallest of some timings.
fn fastest(t: &[f64]) -> f64 {
    t.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Timings of interleaved rounds against their baseline's: the median of the per-round ratios, and
/// the ratio of the fastest of each (noise only ever adds time).
fn ratios(timed: &[f64], baseline: &[f64]) -> (f64, f64) {
    let mut per: Vec<f64> = timed.iter().zip(baseline).map(|(t, b)| t / b).collect();
    per.sort_by(f64::total_cmp);
    (per[per.len() / 2], fastest(timed) / fastest(baseline))
}

fn chain(n: usize, step: &str) -> String {
    let mut s = String::from("name: bench\nsteps:\n");
    for i in 0..n {
        let _ = writeln!(
            s,
            "  - {{id: s{i}, {}}}",
            step.replace("{i}", &i.to_string())
        );
    }
    s
}

fn one(what: &str, n: usize) {
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path());
    match what {
        "state" | "state-get" => {
            let (action, step) = if what == "state" {
                (
                    // the session scope: the engine's own cost, not the store's
                    "set",
                    "tool: state, args: {action: set, key: \"k{i}\", value: {i}, scope: session}",
                )
            } else {
                ("get", "tool: state, args: {action: get, key: \"k{i}\"}")
            };
            let d = run(&e, &chain(n, step));
            println!(
                "state.{action} chain {n:>6} nodes: {:9.2} ms  {:6.3} ms/node  peak RSS {:>7} KiB",
                d.as_secs_f64() * 1e3,
                d.as_secs_f64() * 1e3 / n as f64,
                peak_rss_kib()
            );
        }
        "calls" => {
            // what one MCP call costs the engine: a one-node run of `state get`, `n` times
            let plan = engine::compile_call(
                "state",
                &serde_json::json!({"action": "get", "key": "k"}),
                &engine::CompileOptions::default(),
            )
            .expect("compiles");
            let t = Instant::now();
            for _ in 0..n {
                let o = e.execute(&plan, serde_json::Map::new(), &RunOptions::default());
                assert!(o.ok(), "{:?}", o.error);
            }
            let d = t.elapsed();
            println!(
                "one-node state.get runs ×{n}: {:8.1} ms ({:.3} ms per run: journal, audit and index each)",
                d.as_secs_f64() * 1e3,
                d.as_secs_f64() * 1e3 / n as f64
            );
        }
        "call-path" | "call-novel" => {
            // what one MCP `state get` costs the engine, compilation included; `call-novel`: each
            // call with arguments never seen before (no kept plan to copy)
            let novel = what == "call-novel";
            let t = Instant::now();
            for i in 0..n {
                let key = if novel { format!("k{i}") } else { "k".into() };
                let args = serde_json::json!({"action": "get", "key": key});
                let plan = engine::compile_call("state", &args, &engine::CompileOptions::default())
                    .expect("compiles");
                let o = e.execute(&plan, serde_json::Map::new(), &RunOptions::default());
                assert!(o.ok(), "{:?}", o.error);
            }
            let d = t.elapsed();
            println!(
                "compile_call + execute of state.get ×{n}{}: {:8.1} ms ({:.3} ms per call)",
                if novel { ", every call new" } else { "" },
                d.as_secs_f64() * 1e3,
                d.as_secs_f64() * 1e3 / n as f64
            );
        }
        "exec" => {
            // rounds of the three, interleaved, so a machine that slows down or speeds up between
            // them moves all three alike; the ratios are per round, then their median, and the
            // ratio of the fastest of each (noise only ever adds time)
            const ROUNDS: usize = 5;
            let spawn_true = || {
                let st = std::process::Command::new("true")
                    .status()
                    .expect("spawn true");
                assert!(st.success());
            };
            // the floor with the one durable write a step owes: an intent-sized line appended and
            // fdatasync'd before each spawn, in the same directory as the run's audit log
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(dir.path().join("floor.jsonl"))
                .expect("floor log");
            let line = [b'x'; 400];
            let yaml = chain(
                n,
                "tool: local, args: {action: exec, command: \"true\", args: []}",
            );
            let (mut bare, mut synced, mut chained) = (Vec::new(), Vec::new(), Vec::new());
            let mut shell = Vec::new();
            let (mut cpu_bare, mut cpu_synced, mut cpu_chained) = (0.0, 0.0, 0.0);
            // the floor as a shell script meets it: a bash loop of `/bin/true` (fork and exec each)
            let bash_loop = format!("for i in $(seq {n}); do /bin/true; done");
            for _ in 0..ROUNDS {
                let t = Instant::now();
                let st = std::process::Command::new("bash")
                    .args(["-c", &bash_loop])
                    .status()
                    .expect("bash");
                assert!(st.success());
                shell.push(t.elapsed().as_secs_f64() * 1e3 / n as f64);
                let c0 = cpu_ms().0;
                let t = Instant::now();
                for _ in 0..n {
                    spawn_true();
                }
                bare.push(t.elapsed().as_secs_f64() * 1e3 / n as f64);
                let c1 = cpu_ms().0;
                let t = Instant::now();
                for _ in 0..n {
                    std::io::Write::write_all(&mut log, &line).expect("write");
                    log.sync_data().expect("fdatasync");
                    spawn_true();
                }
                synced.push(t.elapsed().as_secs_f64() * 1e3 / n as f64);
                let c2 = cpu_ms().0;
                chained.push(run(&e, &yaml).as_secs_f64() * 1e3 / n as f64);
                // this process's own CPU (children apart), which a busy machine moves far less
                let c3 = cpu_ms().0;
                cpu_bare += (c1 - c0) / (n * ROUNDS) as f64;
                cpu_synced += (c2 - c1) / (n * ROUNDS) as f64;
                cpu_chained += (c3 - c2) / (n * ROUNDS) as f64;
            }
            let (med_bare, min_bare) = ratios(&chained, &bare);
            let (med_synced, min_synced) = ratios(&chained, &synced);
            let (med_shell, min_shell) = ratios(&chained, &shell);
            println!(
                "local.exec true ×{n}, {ROUNDS} rounds: {:.3} ms/node (fastest round); spawning `true` directly {:.3} ms each: ratio {med_bare:.2}× (median of rounds), {min_bare:.2}× (fastest to fastest); with one fdatasync each {:.3} ms: ratio {med_synced:.2}×, {min_synced:.2}×",
                fastest(&chained),
                fastest(&bare),
                fastest(&synced),
            );
            println!(
                "  a bash loop of /bin/true {:.3} ms each: ratio {med_shell:.2}×, {min_shell:.2}×",
                fastest(&shell),
            );
            println!(
                "  CPU of infra's own process: {cpu_chained:.3} ms/node (load and compile included); spawning directly: {cpu_bare:.3} ms each; with one fdatasync: {cpu_synced:.3} ms each",
            );
        }
        "proc" => {
            // the process layer alone, without the engine around it
            let cap = engine::exec::process::Capture {
                dir: dir.path().join("p"),
                uri_base: "artifact://runs/p".into(),
                cap: 1 << 20,
                redactor: Arc::new(engine::record::Redactor::new()),
            };
            let spec = engine::exec::process::ProcessSpec {
                program: "true".into(),
                ..Default::default()
            };
            let cancel = engine::run::CancelToken::new();
            let cpu0 = cpu_ms().0;
            let t = Instant::now();
            for _ in 0..n {
                engine::exec::process::run(&spec, None, &cancel, &cap).expect("true");
            }
            let d = t.elapsed();
            let cpu1 = cpu_ms().0;
            println!(
                "process::run true ×{n}: {:8.1} ms ({:.3} ms each; CPU of this process {:.3} ms each)",
                d.as_secs_f64() * 1e3,
                d.as_secs_f64() * 1e3 / n as f64,
                (cpu1 - cpu0) / n as f64
            );
        }
        "capture" => {
            // rounds of three, interleaved as in `exec`: the baseline `head … | cat > file`, a
            // capture with no secret known, and one with `n` secrets known (none in the output);
            // each run's directory is removed after it, so the disk holds one GiB at a time
            const ROUNDS: usize = 3;
            const GIB: &str = "head -c 1073741824 /dev/zero";
            let secret_dir = dir.path().join("with-secrets");
            let with = engine(&secret_dir);
            for i in 0..n {
                with.redactor()
                    .add(&format!("s3cr3t-token-{i:02}-Zq8x/+ %!"));
            }
            let yaml = format!(
                "name: bench\nsteps:\n  - {{id: big, tool: local, args: {{action: exec, command: '{GIB}'}}}}\n"
            );
            let out = dir.path().join("cat.out");
            let cat = || {
                let t = Instant::now();
                let st = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("{GIB} | cat > \"$0\""))
                    .arg(&out)
                    .status()
                    .expect("sh");
                let d = t.elapsed().as_secs_f64() * 1e3;
                assert!(st.success());
                let _ = std::fs::remove_file(&out);
                d
            };
            let capture = |e: &Engine, root: &std::path::Path| {
                let d = run(e, &yaml).as_secs_f64() * 1e3;
                let _ = std::fs::remove_dir_all(root.join("runs"));
                d
            };
            // the digest alone, as the capture computes it: what no capture that hashes can beat
            let zeros = vec![0u8; 256 * 1024];
            let sha = || {
                let t = Instant::now();
                let mut d = engine::record::digest::StreamDigest::new();
                for _ in 0..4096 {
                    d.update(&zeros);
                }
                let hex = d.finish().expect("digest");
                assert_eq!(&hex[..8], "49bc20df", "the SHA-256 of 1 GiB of zeros");
                t.elapsed().as_secs_f64() * 1e3
            };
            let (mut base, mut none, mut some) = (Vec::new(), Vec::new(), Vec::new());
            let mut hashed = Vec::new();
            for _ in 0..ROUNDS {
                base.push(cat());
                hashed.push(sha());
                none.push(capture(&e, dir.path()));
                some.push(capture(&with, &secret_dir));
            }
            let (none_med, none_min) = ratios(&none, &base);
            let (some_med, some_min) = ratios(&some, &none);
            let (sha_med, sha_min) = ratios(&none, &hashed);
            println!(
                "1 GiB on stdout, {ROUNDS} rounds (fastest): `{GIB} | cat > file` {:.1} ms; captured with no secret known {:.1} ms ({:.0} MiB/s): ratio {none_med:.2}× (median of rounds), {none_min:.2}× (fastest to fastest); with {n} secrets known {:.1} ms: ratio to no secret {some_med:.2}×, {some_min:.2}×; peak RSS {} KiB",
                fastest(&base),
                fastest(&none),
                1024.0 / fastest(&none) * 1e3,
                fastest(&some),
                peak_rss_kib()
            );
            println!(
                "  SHA-256 of 1 GiB alone (the capture's digest, no I/O) {:.1} ms: the capture with no secret is {sha_med:.2}× it (median), {sha_min:.2}× (fastest); the pipe is {:.2}× it",
                fastest(&hashed),
                fastest(&base) / fastest(&hashed),
            );
        }
        _ => unreachable!("unknown measurement"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        one(&args[i + 1], args[i + 2].parse().expect("n"));
        return;
    }
    let exe = std::env::current_exe().expect("exe");
    let mut runs: Vec<(&str, usize)> = [10, 100, 1_000, 10_000, 100_000]
        .into_iter()
        .flat_map(|n| [("state", n), ("state-get", n)])
        .collect();
    runs.push(("calls", 1_000));
    runs.push(("call-path", 1_000));
    runs.push(("call-novel", 1_000));
    runs.push(("exec", 1_000));
    runs.push(("proc", 1_000));
    runs.push(("capture", 20));
    for (what, n) in runs {
        let st = std::process::Command::new(&exe)
            .args(["--one", what, &n.to_string()])
            .status()
            .expect("child");
        assert!(st.success());
    }
}
