//! Parse + check + compile time and peak memory for generated runbooks of 100, 1,000 and 10,000 steps, in
//! sequence and dag flow; then what `validate` does with a runbook that has one error per step (an
//! undefined input in every step's args): load and render every diagnostic, for 1,000, 3,000 and
//! 10,000 errors, so the time per error shows whether it stays linear. Run with
//! `cargo bench --bench compile`.
//!
//! Each size is measured in a child process (this binary re-run with `--one` or `--errors`), so peak
//! memory (VmHWM) is that size's alone.
//!
//! Then the release binary (`target/release/infra`, or `INFRA_BIN`; skipped when missing), as a user
//! runs it, 11 alternated rounds each, medians: `infra validate` of the 10,000-step runbook and of the
//! one with 10,000 errors beside a one-step file (the process floor); and the lazy catalog, `infra
//! run` of a one-step runbook in a profiles directory holding only it against one that also holds the
//! 10,000-step runbook (ratio: other runbooks should not matter), with the first run there (which
//! indexes the big file) and `infra list` (which checks every runbook) apart. `--cli` runs only these.

#![allow(clippy::print_stdout)]

mod common;
use common::peak_rss_kib;

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn generated(steps: usize, dag: bool) -> String {
    let mut s = format!(
        "name: bench\nflow: {}\ninputs:\n  host: {{ type: string }}\n  n: {{ type: integer, default: 3 }}\nsteps:\n",
        if dag { "dag" } else { "sequence" }
    );
    for i in 0..steps {
        let _ = writeln!(
            s,
            "  - id: s{i}\n    tool: {}",
            if i % 2 == 0 { "state" } else { "local" }
        );
        if dag && i > 0 {
            let _ = writeln!(s, "    needs: [s{}]", i / 2);
        }
        if i % 2 == 0 {
            let _ = writeln!(
                s,
                "    args: {{ action: set, key: \"k{i}\", value: \"{{{{ input.n }}}}\" }}"
            );
        } else {
            let _ = writeln!(
                s,
                "    args: {{ action: exec, command: \"echo {{{{ input.host }}}} {i}\" }}"
            );
            let _ = writeln!(s, "    retry: {{ attempts: 2, delay_ms: 10 }}");
        }
    }
    s
}

/// `steps` steps, each reading an input that is not declared.
fn with_errors(steps: usize) -> String {
    let mut s = String::from("name: bench\ninputs:\n  host: { type: string }\nsteps:\n");
    for i in 0..steps {
        let _ = writeln!(
            s,
            "  - id: s{i}\n    tool: state\n    args: {{action: get, key: \"{{{{ input.missing }}}}\"}}"
        );
    }
    s
}

/// Load and render (as `validate` prints them) a runbook with one error per step; the best of a few
/// rounds.
fn errors(steps: usize) {
    let text = with_errors(steps);
    let mut best: Option<(Duration, Duration)> = None;
    for _ in 0..5 {
        let file = dsl::SourceFile::new("bench.yaml", text.clone());
        let t0 = Instant::now();
        let loaded = dsl::load(&file, None);
        let load = t0.elapsed();
        assert_eq!(loaded.diagnostics.len(), steps);
        let t1 = Instant::now();
        let shown = dsl::diagnostic::render_all(&loaded.diagnostics, Default::default());
        let render = t1.elapsed();
        assert!(shown.contains("undefined-input"));
        if best.is_none_or(|(l, r)| load + render < l + r) {
            best = Some((load, render));
        }
    }
    let (load, render) = best.expect("at least one round");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:>6} errors           load {:7.2} ms  render {:7.2} ms  total {:7.2} ms  ({:.1} µs/error)  peak RSS {:>6} KiB",
        steps,
        ms(load),
        ms(render),
        ms(load + render),
        (load + render).as_secs_f64() * 1e6 / steps as f64,
        peak_rss_kib(),
    );
}

struct Times {
    parse: Duration,
    load: Duration,
    compile: Duration,
}

fn once(text: &str) -> Times {
    let file = dsl::SourceFile::new("bench.yaml", text.to_owned());
    let t0 = Instant::now();
    let _ = dsl::parse::parse(&file).expect("parses");
    let parse = t0.elapsed();
    let t1 = Instant::now();
    let loaded = dsl::load(&file, None);
    let load = t1.elapsed();
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics.first());
    let rb = Arc::new(loaded.runbooks.into_iter().next().expect("one runbook"));
    let t2 = Instant::now();
    let plan = engine::compile(rb, &engine::CompileOptions::default()).expect("compiles");
    let compile = t2.elapsed();
    assert!(!plan.is_empty());
    Times {
        parse,
        load,
        compile,
    }
}

fn one(steps: usize, dag: bool) {
    let text = generated(steps, dag);
    // warm up the schema validators and the template renderer
    let _ = once(&generated(2, dag));
    let rounds = if steps >= 10_000 { 5 } else { 20 };
    let mut best: Option<Times> = None;
    for _ in 0..rounds {
        let t = once(&text);
        let total = t.load + t.compile;
        if best.as_ref().is_none_or(|b| total < b.load + b.compile) {
            best = Some(t);
        }
    }
    let b = best.expect("at least one round");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:>6} steps {:8}  parse {:7.2} ms  parse+check {:7.2} ms  compile {:7.2} ms  total {:7.2} ms  ({:.1} µs/step)  peak RSS {:>6} KiB  [{} KiB of YAML]",
        steps,
        if dag { "dag" } else { "sequence" },
        ms(b.parse),
        ms(b.load),
        ms(b.compile),
        ms(b.load + b.compile),
        (b.load + b.compile).as_secs_f64() * 1e6 / steps as f64,
        peak_rss_kib(),
        text.len() / 1024,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        let steps: usize = args[i + 1].parse().expect("steps");
        one(steps, args[i + 2] == "dag");
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--errors") {
        errors(args[i + 1].parse().expect("errors"));
        return;
    }
    if args.iter().any(|a| a == "--cli") {
        cli();
        return;
    }
    let exe = std::env::current_exe().expect("exe");
    for dag in [false, true] {
        for steps in [100, 1_000, 10_000] {
            let status = std::process::Command::new(&exe)
                .args([
                    "--one",
                    &steps.to_string(),
                    if dag { "dag" } else { "sequence" },
                ])
                .status()
                .expect("child");
            assert!(status.success());
        }
    }
    for steps in [1_000, 3_000, 10_000] {
        let status = std::process::Command::new(&exe)
            .args(["--errors", &steps.to_string()])
            .status()
            .expect("child");
        assert!(status.success());
    }
    cli();
}

/// The median of some timings.
fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Wall time of the release binary run with `args` in `profiles` (ms); it must end as `ok` says.
fn infra(bin: &std::path::Path, profiles: &std::path::Path, args: &[&str], ok: bool) -> f64 {
    let t = Instant::now();
    let st = std::process::Command::new(bin)
        .args(args)
        .current_dir(profiles)
        .env("MCP_PROFILES_DIR", profiles)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("spawn the release binary");
    let d = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(st.success(), ok, "infra {args:?}");
    d
}

/// What a user of the release binary waits for: `validate` of big files, `run` beside a big file.
fn cli() {
    const ROUNDS: usize = 11;
    let bin = std::env::var_os("INFRA_BIN").map_or_else(
        || std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/infra")),
        std::path::PathBuf::from,
    );
    if !bin.is_file() {
        println!(
            "`{}` missing (cargo build --release): the CLI figures are skipped",
            bin.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (alone, beside) = (tmp.path().join("alone"), tmp.path().join("beside"));
    let one = "name: one\nsteps:\n  - {id: a, tool: state, args: {action: get, key: k}}\n";
    for d in [&alone, &beside] {
        std::fs::create_dir_all(d.join("runbooks")).expect("runbooks dir");
        std::fs::write(d.join("runbooks/one.yaml"), one).expect("one");
    }
    let big = beside.join("runbooks/big.yaml");
    std::fs::write(&big, generated(10_000, false)).expect("big");
    let errs = tmp.path().join("errors.yaml");
    std::fs::write(&errs, with_errors(10_000)).expect("errors");
    let small = alone.join("runbooks/one.yaml");
    let (small, big_s, errs_s) = (
        small.to_string_lossy().into_owned(),
        big.to_string_lossy().into_owned(),
        errs.to_string_lossy().into_owned(),
    );
    let first = infra(&bin, &beside, &["run", "one"], true);
    let (mut floor, mut ok10k, mut err10k) = (Vec::new(), Vec::new(), Vec::new());
    let (mut run_alone, mut run_beside, mut list) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        floor.push(infra(&bin, &alone, &["validate", &small], true));
        ok10k.push(infra(&bin, &alone, &["validate", &big_s], true));
        err10k.push(infra(&bin, &alone, &["validate", &errs_s], false));
        list.push(infra(&bin, &beside, &["list"], true));
        // which of the two goes first changes every round
        let mut pair = [(&alone, &mut run_alone), (&beside, &mut run_beside)];
        if round % 2 == 1 {
            pair.reverse();
        }
        for (dir, times) in pair {
            times.push(infra(&bin, dir, &["run", "one"], true));
        }
    }
    let (a, b) = (median(run_alone), median(run_beside));
    println!(
        "infra validate, {ROUNDS} rounds (medians): 10,000 steps {:.1} ms; 10,000 errors {:.1} ms; a one-step file {:.1} ms",
        median(ok10k),
        median(err10k),
        median(floor)
    );
    println!(
        "infra run of a one-step runbook, {ROUNDS} rounds (medians): alone {a:.1} ms; beside a 10,000-step runbook {b:.1} ms: ratio {:.2}× (first run there, indexing it: {first:.1} ms; infra list, checking both: {:.1} ms)",
        b / a,
        median(list)
    );
}
