//! Engine overhead: chains of `state.set` (writes: an fsync'd intent each) and `state.get` nodes (10
//! to 100,000), a chain of `local.exec true` against
//! spawning `true` directly (and against spawning it after one fdatasync'd append each, the floor
//! of a step whose intent is durable), and time and peak memory while capturing 1 GiB of stdout, with no
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
            let cpu0 = cpu_ms().0;
            let t = Instant::now();
            for _ in 0..n {
                let st = std::process::Command::new("true")
                    .status()
                    .expect("spawn true");
                assert!(st.success());
            }
            let bare = t.elapsed();
            let cpu1 = cpu_ms().0;
            // the floor with the one durable write a step owes: an intent-sized line appended and
            // fdatasync'd before each spawn, in the same directory as the run's audit log
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(dir.path().join("floor.jsonl"))
                .expect("floor log");
            let line = [b'x'; 400];
            let t = Instant::now();
            for _ in 0..n {
                std::io::Write::write_all(&mut log, &line).expect("write");
                log.sync_data().expect("fdatasync");
                let st = std::process::Command::new("true")
                    .status()
                    .expect("spawn true");
                assert!(st.success());
            }
            let synced = t.elapsed();
            let cpu2 = cpu_ms().0;
            let d = run(
                &e,
                &chain(
                    n,
                    "tool: local, args: {action: exec, command: \"true\", args: []}",
                ),
            );
            println!(
                "local.exec true ×{n}: {:8.1} ms ({:.3} ms/node); spawning `true` directly ×{n}: {:8.1} ms ({:.3} ms each); ratio {:.2}×; with one fdatasync each: {:8.1} ms ({:.3} ms each); ratio {:.2}×",
                d.as_secs_f64() * 1e3,
                d.as_secs_f64() * 1e3 / n as f64,
                bare.as_secs_f64() * 1e3,
                bare.as_secs_f64() * 1e3 / n as f64,
                d.as_secs_f64() / bare.as_secs_f64(),
                synced.as_secs_f64() * 1e3,
                synced.as_secs_f64() * 1e3 / n as f64,
                d.as_secs_f64() / synced.as_secs_f64()
            );
            // this process's own CPU (children apart), which a busy machine moves far less
            let cpu3 = cpu_ms().0;
            println!(
                "  CPU of infra's own process: {:.3} ms/node (load and compile included); spawning directly: {:.3} ms each; with one fdatasync: {:.3} ms each",
                (cpu3 - cpu2) / n as f64,
                (cpu1 - cpu0) / n as f64,
                (cpu2 - cpu1) / n as f64
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
