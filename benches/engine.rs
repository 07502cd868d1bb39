//! Engine overhead: chains of `state.set` (writes: an fsync'd intent each) and `state.get` nodes (10
//! to 100,000), a chain of `local.exec true` against
//! spawning `true` directly (and against spawning it after one fdatasync'd append each, the floor
//! of a step whose intent is durable; five interleaved rounds of the three, ratios per round and of
//! the fastest rounds), and time and peak memory while capturing 1 GiB of stdout, with no
//! secret known and with 20. Run with `cargo bench --bench engine`.
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
        "call-path" => {
            // what one MCP `state get` costs the engine, compilation included
            let args = serde_json::json!({"action": "get", "key": "k"});
            let t = Instant::now();
            for _ in 0..n {
                let plan = engine::compile_call("state", &args, &engine::CompileOptions::default())
                    .expect("compiles");
                let o = e.execute(&plan, serde_json::Map::new(), &RunOptions::default());
                assert!(o.ok(), "{:?}", o.error);
            }
            let d = t.elapsed();
            println!(
                "compile_call + execute of state.get ×{n}: {:8.1} ms ({:.3} ms per call)",
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
            let (mut cpu_bare, mut cpu_synced, mut cpu_chained) = (0.0, 0.0, 0.0);
            for _ in 0..ROUNDS {
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
            let ratio = |floor: &[f64]| {
                let mut per: Vec<f64> = chained.iter().zip(floor).map(|(c, f)| c / f).collect();
                per.sort_by(f64::total_cmp);
                (per[per.len() / 2], fastest(&chained) / fastest(floor))
            };
            let (med_bare, min_bare) = ratio(&bare);
            let (med_synced, min_synced) = ratio(&synced);
            println!(
                "local.exec true ×{n}, {ROUNDS} rounds: {:.3} ms/node (fastest round); spawning `true` directly {:.3} ms each: ratio {med_bare:.2}× (median of rounds), {min_bare:.2}× (fastest to fastest); with one fdatasync each {:.3} ms: ratio {med_synced:.2}×, {min_synced:.2}×",
                fastest(&chained),
                fastest(&bare),
                fastest(&synced),
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
        "gib" | "gib-secrets" => {
            // with `n` > 1 (gib-secrets), that many secrets are known, none in the output
            for i in 0..if what == "gib" { 0 } else { n } {
                e.redactor().add(&format!("s3cr3t-token-{i:02}-Zq8x/+ %!"));
            }
            let d = run(
                &e,
                "name: bench\nsteps:\n  - {id: big, tool: local, args: {action: exec, command: 'head -c 1073741824 /dev/zero'}}\n",
            );
            println!(
                "1 GiB on stdout, {} secret(s) known: {:8.1} ms ({:.0} MiB/s)  peak RSS {:>7} KiB",
                if what == "gib" { 0 } else { n },
                d.as_secs_f64() * 1e3,
                1024.0 / d.as_secs_f64(),
                peak_rss_kib()
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
    runs.push(("exec", 1_000));
    runs.push(("proc", 1_000));
    runs.push(("gib", 1));
    runs.push(("gib-secrets", 20));
    for (what, n) in runs {
        let st = std::process::Command::new(&exe)
            .args(["--one", what, &n.to_string()])
            .status()
            .expect("child");
        assert!(st.success());
    }
}
