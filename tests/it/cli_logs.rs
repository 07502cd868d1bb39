//! Progress for CI logs, a failing step's output in the summary, `infra runs logs` (and `--follow`), and
//! `infra list` fitting a terminal but whole when piped.

use std::time::{Duration, Instant};

use crate::project::Project;
use crate::stdout_json;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const FAILING: &str = "inputs:\n  token: {type: string, secret: true}\nsteps:\n  - {id: fine, tool: local, args: {action: exec, command: 'echo all good'}}\n  - id: boom\n    tool: local\n    needs: [fine]\n    args: {action: exec, command: 'for i in $(seq 1 30); do echo out$i; done; echo using {{ input.token }} >&2; echo giving up >&2; exit 3'}\n";

#[test]
fn piped_progress_is_one_plain_line_per_step_event() {
    let p = Project::new().unsafe_local().runbook("ci", FAILING);
    let out = p
        .infra()
        .args(["run", "ci", "--input", "token=hunter2-token"])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    let lines: Vec<&str> = e.lines().collect();
    let at = |want: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(want))
            .unwrap_or_else(|| panic!("no line `{want}…` in:\n{e}"))
    };
    let order = [
        at("[ci] run started: 2 steps"),
        at("[ci] fine started"),
        at("[ci] fine succeeded in "),
        at("[ci] boom started"),
        at("[ci] boom failed in "),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{e}");
    assert!(!e.contains('\x1b') && !e.contains('…'), "plain text: {e}");
    assert!(!e.contains("hunter2-token"), "{e}");
}

#[test]
fn a_failing_steps_last_output_lines_are_in_the_summary_redacted() {
    let p = Project::new().unsafe_local().runbook("ci", FAILING);
    let out = p
        .infra()
        .args(["run", "ci", "--input", "token=hunter2-token"])
        .output()
        .expect("infra");
    let s = text(&out.stdout);
    assert!(
        s.contains(
            "stderr, last 2 lines:\n           | using [REDACTED]\n           | giving up\n"
        ),
        "{s}"
    );
    assert!(
        s.contains("stdout, last 20 lines:\n           | out11\n"),
        "{s}"
    );
    assert!(s.contains("| out30\n") && !s.contains("| out10\n"), "{s}");
    assert!(!s.contains("hunter2-token"), "{s}");
    assert!(s.contains("logs: `infra runs logs "), "{s}");
    // the step that succeeded shows none
    assert!(!s.contains("| all good"), "{s}");
    // -v shows more of it
    let v = p
        .infra()
        .args(["run", "ci", "-v", "--input", "token=x"])
        .output()
        .expect("infra");
    assert!(
        text(&v.stdout).contains("stdout, last 30 lines:"),
        "{}",
        text(&v.stdout)
    );
}

#[test]
fn runs_logs_prints_each_steps_output_and_filters_by_step() {
    let p = Project::new().unsafe_local().runbook("ci", FAILING);
    let run = p
        .infra()
        .args(["run", "ci", "--json", "--input", "token=hunter2-token"])
        .output()
        .expect("infra");
    let id = stdout_json(&run)["run_id"].as_str().expect("id").to_owned();
    let logs = p
        .infra()
        .args(["runs", "logs", &id[..8]])
        .output()
        .expect("infra");
    assert_eq!(logs.status.code(), Some(0), "{}", text(&logs.stderr));
    let t = text(&logs.stdout);
    assert!(
        t.starts_with("==> fine/stdout <==\nall good\n\n==> boom/stdout <==\nout1\n"),
        "{t}"
    );
    assert!(
        t.ends_with("==> boom/stderr <==\nusing [REDACTED]\ngiving up\n"),
        "{t}"
    );
    let one = p
        .infra()
        .args(["runs", "logs", &id, "--step", "fine"])
        .output()
        .expect("infra");
    assert_eq!(text(&one.stdout), "==> fine/stdout <==\nall good\n");
    let none = p
        .infra()
        .args(["runs", "logs", &id, "--step", "nope"])
        .output()
        .expect("infra");
    assert_eq!(none.status.code(), Some(2));
    assert!(
        text(&none.stderr).contains("has no step `nope`; its steps are: fine, boom"),
        "{}",
        text(&none.stderr)
    );
}

/// Polls `f` until it answers, failing after a minute (a bound for a stuck test, not a timing claim).
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn runs_logs_follow_tails_a_running_run_until_it_ends() {
    let p = Project::new().unsafe_local();
    let gate = p.path().join("gate");
    let p = p.runbook(
        "slow",
        &format!(
            "steps:\n  - {{id: talk, tool: local, args: {{action: exec, command: 'echo first; while [ ! -e {} ]; do sleep 0.05; done; echo second'}}}}\n",
            gate.display()
        ),
    );
    let mut run = p
        .command()
        .args(["run", "slow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run");
    let id = wait_for("the run to be listed", || {
        let out = p.infra().args(["runs", "list", "--json"]).output().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v[0]["run_id"].as_str().map(str::to_owned)
    });
    let seen = p.path().join("followed.txt");
    let mut follow = p
        .command()
        .args(["runs", "logs", &id, "--follow"])
        .stdout(std::fs::File::create(&seen).expect("file"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("follow");
    // the follower has printed the first line before the gate opens
    wait_for("the first line", || {
        let t = std::fs::read_to_string(&seen).ok()?;
        (t == "==> talk/stdout <==\nfirst\n").then_some(())
    });
    std::fs::write(&gate, "").expect("gate");
    // it prints the rest, then ends by itself once the run has ended
    let followed = follow.wait().expect("follow");
    assert!(followed.success());
    assert_eq!(
        std::fs::read_to_string(&seen).expect("read"),
        "==> talk/stdout <==\nfirst\nsecond\n"
    );
    assert!(run.wait().expect("run").success());
}

#[test]
fn list_prints_whole_lines_when_piped_and_fits_a_terminal() {
    let long = "Deploys the service to every region one after the other, waiting for health checks between regions, and rolls back on failure";
    let p = Project::new().runbook(
        "deploy.all",
        &format!("description: {long}\ntags: [deploy, prod]\nsteps:\n  - {{id: s, tool: state, args: {{action: get, key: k}}}}\n"),
    );
    let piped = p.infra().arg("list").output().expect("infra");
    let t = text(&piped.stdout);
    let line = t
        .lines()
        .find(|l| l.starts_with("deploy.all "))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(line.ends_with(long), "whole when piped: {line}");
    let limited = p.infra().args(["list", "-n", "2"]).output().expect("infra");
    assert_eq!(
        text(&limited.stdout).lines().count(),
        3,
        "a header and two runbooks"
    );

    // on a terminal 60 columns wide (`script` gives the command one)
    let bin = assert_cmd::cargo::cargo_bin("infra");
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("stty rows 24 cols 60; {} list", bin.display()),
            "/dev/null",
        ])
        .env_clear()
        .env("MCP_PROFILES_DIR", p.path())
        .env("NO_COLOR", "1")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(p.path())
        .output()
        .expect("script");
    let t = text(&out.stdout).replace("\r\n", "\n");
    let rows: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(rows.iter().any(|l| l.starts_with("deploy.all ")), "{t}");
    for l in &rows {
        assert!(l.chars().count() <= 60, "wider than the terminal: {l:?}");
    }
    assert!(
        rows.iter()
            .any(|l| l.starts_with("deploy.all ") && l.ends_with('…')),
        "{t}"
    );
}
