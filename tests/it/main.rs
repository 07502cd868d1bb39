//! Integration tests of the `infra` binary and of the language + compiler on data files.
//!
//! `tests/data/err/<code>.yaml` must produce a diagnostic with that code; its rendered diagnostics are
//! compared with `<code>.stderr` (written when missing, or regenerated with `UPDATE_EXPECT=1`).
//! `tests/data/ok/*` must load and compile with no error.

mod change_control;
mod cli_conventions;
mod cli_doctor;
mod cli_evidence;
mod cli_logs;
mod cli_plan;
mod cli_report;
mod cli_run;
mod cli_shell;
mod docs;
mod engine_runs;
mod gitops;
mod golden;
mod http;
mod intent;
mod k8s;
mod legacy;
mod limits;
mod mcp;
mod pipeline;
mod project;
mod psql;
mod psql_helpers;
mod psql_readonly;
mod repo_write;
mod resume;
mod retention;
mod schemas;
mod shell_quoting;
mod ssh;
#[path = "../support/mod.rs"]
pub mod support;
mod support_services;
mod support_sshd;

use std::path::PathBuf;

/// `infra` with a throwaway profiles directory, a working directory and a clean environment.
pub fn infra_in(profiles: &std::path::Path, cwd: &std::path::Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("infra").expect("binary");
    c.env_clear()
        .env("MCP_PROFILES_DIR", profiles)
        .env("NO_COLOR", "1")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(cwd);
    c
}

/// A command's stdout as JSON (the test fails with both streams shown when it is not).
pub fn stdout_json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Loads and compiles every runbook of a file; returns runbooks compiled and all diagnostics, sorted.
pub fn check_file(path: &std::path::Path) -> (usize, Vec<dsl::Diagnostic>) {
    let text = std::fs::read_to_string(path).expect("read data file");
    let rel = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path);
    let file = dsl::SourceFile::new(rel.display().to_string(), text);
    check_source(&file, path.file_stem().and_then(|s| s.to_str()))
}

pub fn check_source(file: &dsl::SourceFile, stem: Option<&str>) -> (usize, Vec<dsl::Diagnostic>) {
    let loaded = dsl::load(file, stem);
    let mut all = dsl::Diagnostics::new();
    all.extend(loaded.diagnostics);
    let catalog = engine::Catalog::builtin();
    let opts = engine::CompileOptions {
        resolver: Some(&catalog),
        stack: Vec::new(),
    };
    let mut compiled = 0;
    for rb in loaded.runbooks {
        match engine::compile(std::sync::Arc::new(rb), &opts) {
            Ok(p) => {
                compiled += 1;
                all.extend(p.warnings().iter().cloned());
            }
            Err(d) => all.extend(d),
        }
    }
    (compiled, all.into_sorted())
}

/// One call of one tool through the engine, as a one-node plan (what the front ends do).
pub fn call_tool(
    e: &engine::run::Engine,
    tool: &str,
    args: serde_json::Value,
    cancel: &engine::run::CancelToken,
) -> engine::run::StepOutcome {
    let plan = engine::compile_call(tool, &args, &engine::CompileOptions::default())
        .unwrap_or_else(|d| panic!("{args}: {d:?}"));
    let o = e.execute(
        &plan,
        serde_json::Map::new(),
        &engine::run::RunOptions {
            cancel: cancel.clone(),
            depth: 0,
            progress: None,
            followed: false,
        },
    );
    o.steps.into_iter().next().expect("one step")
}

/// Files under `dir` whose bytes contain any of `needles`.
pub fn files_containing(dir: &std::path::Path, needles: &[&str]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                let text = String::from_utf8_lossy(&bytes);
                if needles.iter().any(|n| text.contains(n)) {
                    seen.push(p.display().to_string());
                }
            }
        }
    }
    seen
}

/// SHA-256 of a file, by `sha256sum` (an independent implementation to check ours against).
pub fn sha256_file(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// SHA-256 of what a reader yields, streamed through `sha256sum`.
pub fn sha256_reader(mut r: impl std::io::Read) -> String {
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::copy(&mut r, &mut stdin).expect("feed sha256sum");
    drop(stdin);
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// An artifact opened the way every front end opens one (no link followed below the root).
pub fn open_artifact(root: &std::path::Path, uri: &str) -> std::fs::File {
    engine::record::artifacts::open(root, uri).unwrap_or_else(|e| panic!("{uri}: {e}"))
}

/// Every file under `dir`.
pub fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                all.push(p.display().to_string());
            }
        }
    }
    all
}

/// Whether a local process still runs (a zombie does not: it was killed and waits to be reaped).
pub fn alive(pid: impl std::fmt::Display) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.to_string().trim())) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// The pid a test command writes with `echo $$ > file`, once it is there (the shell creates the file
/// before it writes the pid); empty if it never comes within `secs`.
pub fn pid_written(pidfile: &std::path::Path, secs: u64) -> String {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let pid = std::fs::read_to_string(pidfile)
            .unwrap_or_default()
            .trim()
            .to_owned();
        if !pid.is_empty() || std::time::Instant::now() >= until {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
