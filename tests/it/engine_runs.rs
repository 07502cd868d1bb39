//! The engine end to end: real processes, a real git repository, the audit log and the evidence journal.

use std::path::Path;
use std::sync::Arc;

use engine::record::evidence::{self, Record, Status};
use engine::run::{CancelToken, Engine, RunOptions, RunOutcome};
use serde_json::{Map, Value, json};

use crate::project::Project;

fn run_yaml(engine: &Engine, yaml: &str, inputs: Value) -> RunOutcome {
    run_with(engine, yaml, inputs, &CancelToken::new())
}

fn run_with(engine: &Engine, yaml: &str, inputs: Value, cancel: &CancelToken) -> RunOutcome {
    let file = dsl::SourceFile::new("test.yaml", yaml);
    let loaded = dsl::load(&file, Some("test"));
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let rb = Arc::new(loaded.runbooks.into_iter().next().expect("runbook"));
    // compiled as the front ends do, nested runbooks resolved in the engine's catalog (an unresolved
    // nested run counts as destructive and would need an approval)
    let plan = engine::request::compile(&engine.catalog(), &rb).expect("compiles");
    let given = inputs.as_object().cloned().unwrap_or_default();
    let inputs = dsl::resolve_inputs(&rb, &given).expect("inputs");
    engine.execute(
        &plan,
        inputs,
        &RunOptions {
            cancel: cancel.clone(),
            depth: 0,
            progress: None,
            followed: false,
        },
    )
}

/// A state value as `state get` sees it by default: the session first, then the store.
fn state_of(e: &Engine, key: &str) -> Option<Value> {
    e.session()
        .get(key)
        .or_else(|| e.store().ok()?.state_get(key).ok()?)
}

fn step<'a>(o: &'a RunOutcome, id: &str) -> &'a engine::run::StepOutcome {
    o.steps
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no step {id} in {:?}", o.steps))
}

fn journal(o: &RunOutcome) -> Vec<Record> {
    evidence::read(&o.dir.join("journal.jsonl"))
        .expect("journal")
        .records
}

#[test]
fn a_step_may_accept_other_exit_codes_and_always_reports_its_own() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let o = run_yaml(
        &e,
        "name: t\nsteps:\n  - {id: diff, tool: local, args: {action: exec, command: 'exit 1', ok_exit_codes: [0, 1]}}\n  - {id: after, tool: local, args: {action: exec, command: 'echo {{ steps.diff.exit_code }}'}}\n",
        json!({}),
    );
    assert!(o.ok(), "{:?}", o.error);
    assert_eq!(
        step(&o, "diff").result.as_ref().expect("result")["exit_code"],
        1
    );
    assert_eq!(
        step(&o, "after").result.as_ref().expect("result")["stdout"],
        "1\n"
    );
    // the listed codes replace 0; a plain failure says how to accept a status
    let o = run_yaml(
        &e,
        "name: t\nsteps:\n  - {id: a, tool: local, continue_on_error: true, args: {action: exec, command: 'true', ok_exit_codes: [1]}}\n  - {id: b, tool: local, continue_on_error: true, args: {action: exec, command: 'exit 2'}}\n",
        json!({}),
    );
    let a = step(&o, "a").error.as_ref().expect("refused status 0");
    assert_eq!(a.kind, engine::actions::ErrorKind::NonzeroExit);
    assert!(a.message.contains("ok_exit_codes"), "{}", a.message);
    let b = step(&o, "b").error.as_ref().expect("status 2");
    assert!(
        b.hint
            .as_deref()
            .is_some_and(|h| h.contains("ok_exit_codes")),
        "{b:?}"
    );
}

#[test]
fn a_failed_step_stops_the_run_and_continue_on_error_does_not() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let o = run_yaml(
        &e,
        "name: t\nsteps:\n  - {id: a, tool: state, args: {action: set, key: a, value: 1}}\n  - {id: b, tool: local, args: {action: exec, command: 'exit 3'}}\n  - {id: c, tool: state, args: {action: set, key: c, value: 1}}\n",
        json!({}),
    );
    assert_eq!(o.status, Status::Failed);
    assert_eq!(
        step(&o, "b").error.as_ref().map(|e| e.kind.as_str()),
        Some("nonzero_exit")
    );
    assert_eq!(
        step(&o, "b")
            .result
            .as_ref()
            .map(|r| r["exit_code"].clone()),
        Some(json!(3))
    );
    assert_eq!(step(&o, "c").status, Status::Skipped);
    assert!(state_of(&e, "c").is_none());

    let o = run_yaml(
        &e,
        "name: t\nflow: dag\nsteps:\n  - {id: b, tool: local, continue_on_error: true, args: {action: exec, command: 'exit 3'}}\n  - {id: c, tool: state, args: {action: set, key: c, value: 2}}\n  - {id: d, tool: state, args: {action: set, key: d, value: '{{ steps.b.exit_code }}'}}\n",
        json!({}),
    );
    assert_eq!(o.status, Status::Succeeded, "{:?}", o.error);
    assert_eq!(step(&o, "b").status, Status::Failed);
    assert_eq!(state_of(&e, "c"), Some(json!(2)));
    assert_eq!(
        step(&o, "d").status,
        Status::Skipped,
        "d reads the failed step's output"
    );
}

#[test]
fn retries_run_out_and_until_is_checked() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let counter = p.path().join("count");
    let o = run_yaml(
        &e,
        &format!(
            "name: t\nsteps:\n  - id: flaky\n    tool: local\n    retry: {{attempts: 3, delay_ms: 1, backoff: 2, on: [nonzero_exit]}}\n    args: {{action: exec, command: 'echo x >> {} ; exit 1'}}\n",
            counter.display()
        ),
        json!({}),
    );
    assert_eq!(o.status, Status::Failed);
    assert_eq!(step(&o, "flaky").attempts, 3);
    assert_eq!(
        std::fs::read_to_string(&counter)
            .expect("count")
            .lines()
            .count(),
        3
    );

    let o = run_yaml(
        &e,
        "name: t\nsteps:\n  - id: poll\n    tool: state\n    retry: {attempts: 4, delay_ms: 1, until: '{{ result.value == 99 }}'}\n    args: {action: get, key: never}\n",
        json!({}),
    );
    assert_eq!(o.status, Status::Failed);
    assert_eq!(step(&o, "poll").attempts, 4);
    assert_eq!(
        step(&o, "poll").error.as_ref().map(|e| e.kind.as_str()),
        Some("until_not_met")
    );
}

#[test]
fn rollbacks_run_newest_first_for_the_steps_that_succeeded() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let log = p.path().join("log");
    let yaml = format!(
        "name: t\nsteps:\n  - id: one\n    tool: local\n    args: {{action: exec, command: 'echo do1 >> {l}'}}\n    rollback: {{tool: local, args: {{action: exec, command: 'echo undo1 >> {l}'}}}}\n  - id: two\n    tool: local\n    args: {{action: exec, command: 'echo do2 >> {l}'}}\n    rollback: {{tool: local, args: {{action: exec, command: 'echo undo2 >> {l}'}}}}\n  - id: three\n    tool: local\n    args: {{action: exec, command: 'exit 1'}}\n    rollback: {{tool: local, args: {{action: exec, command: 'echo undo3 >> {l}'}}}}\nfinally:\n  - id: always\n    tool: local\n    args: {{action: exec, command: 'echo finally >> {l}'}}\n",
        l = log.display()
    );
    let o = run_yaml(&e, &yaml, json!({}));
    assert_eq!(o.status, Status::Failed);
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, ["do1", "do2", "finally", "undo2", "undo1"]);
}

#[test]
fn finally_and_rollbacks_see_how_the_main_steps_ended_with_secrets_masked() {
    let p = Project::new();
    let e = p.engine();
    // `bad` fails with the secret in its message (the URL it could not reach); `finally` and the rollback read `run`
    let yaml = "name: t\ninputs:\n  token: {type: string, secret: true}\nsteps:\n  - id: ok\n    tool: state\n    args: {action: set, key: before, value: '{{ run.status }}', scope: session}\n    rollback: {tool: state, args: {action: set, key: undo, value: '{{ run.failed_steps }}', scope: session}}\n  - id: bad\n    tool: http\n    args: {action: request, url: 'http://127.0.0.1:1/{{ input.token }}'}\nfinally:\n  - id: report\n    tool: state\n    args: {action: set, key: report, value: '{{ run.status }}|{{ run.failed_steps | join(sep=\",\") }}|{{ run.error.message }}', scope: session}\n";
    let o = run_yaml(&e, yaml, json!({"token": "s3cr3t-Tk-77"}));
    assert_eq!(o.status, Status::Failed);
    assert_eq!(state_of(&e, "before"), Some(json!("running")));
    assert_eq!(state_of(&e, "undo"), Some(json!(["bad"])));
    let report = state_of(&e, "report").expect("report");
    let report = report.as_str().expect("text");
    assert!(
        report.starts_with("failed|bad|step `bad` failed"),
        "{report}"
    );
    assert!(
        !report.contains("s3cr3t-Tk-77"),
        "the secret reached a template: {report}"
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let pids = p.path().join("pids");
    let o = run_yaml(
        &e,
        &format!(
            "name: t\nsteps:\n  - id: hang\n    tool: local\n    timeout_ms: 500\n    args: {{action: exec, command: 'sleep 1000 & echo $! > {p}; echo $$ >> {p}; sleep 1000'}}\n",
            p = pids.display()
        ),
        json!({}),
    );
    assert_eq!(o.status, Status::Failed);
    assert_eq!(step(&o, "hang").status, Status::TimedOut);
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .expect("pids")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 2);
    std::thread::sleep(std::time::Duration::from_millis(100));
    for p in pids {
        assert!(!crate::alive(p), "process {p} survived the timeout");
    }
}

#[test]
fn cancel_stops_a_parallel_run_promptly() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(400));
        c2.cancel();
    });
    let o = run_with(
        &e,
        "name: t\nflow: dag\nmax_parallel: 3\nsteps:\n  - {id: a, tool: local, args: {action: exec, command: 'sleep 1000'}}\n  - {id: b, tool: local, args: {action: exec, command: 'sleep 1000'}}\n  - {id: c, tool: local, args: {action: exec, command: 'sleep 1000'}}\n  - {id: d, tool: state, needs: [a], args: {action: set, key: d, value: 1}}\n",
        json!({}),
        &cancel,
    );
    t.join().expect("canceller");
    assert_eq!(o.status, Status::Cancelled);
    for id in ["a", "b", "c"] {
        assert_eq!(step(&o, id).status, Status::Cancelled, "{id}");
    }
    assert_eq!(step(&o, "d").status, Status::Skipped);
}

#[test]
fn local_actions_without_the_opt_in_are_refused_audited_and_never_spawned() {
    let p = Project::new();
    let e = p.engine();
    let marker = p.path().join("spawned");
    let o = run_yaml(
        &e,
        &format!(
            "name: t\nsteps:\n  - {{id: x, tool: local, args: {{action: exec, command: 'touch {}'}}}}\n",
            marker.display()
        ),
        json!({}),
    );
    assert_eq!(o.status, Status::Failed);
    let err = step(&o, "x").error.clone().expect("error");
    assert_eq!(err.kind, "refused");
    assert!(
        err.message.contains("INFRA_UNSAFE_LOCAL=1"),
        "{}",
        err.message
    );
    assert!(!marker.exists());
    let audit = e.audit().tail(50).expect("audit");
    assert!(
        audit
            .iter()
            .any(|r| r["kind"] == "refused" && r["tool"] == "local"),
        "{audit:?}"
    );
    assert_eq!(e.audit().verify().expect("verify").problem, None);
}

#[test]
fn an_unwritable_audit_log_refuses_the_run() {
    let p = Project::new().unsafe_local();
    std::fs::create_dir(p.path().join("audit.jsonl")).expect("a directory in its place");
    let e = p.engine();
    let o = run_yaml(
        &e,
        "name: t\nsteps:\n  - {id: a, tool: state, args: {action: set, key: a, value: 1}}\n",
        json!({}),
    );
    assert_eq!(o.status, Status::Refused);
    assert_eq!(
        o.error.as_ref().map(|e| e.kind.as_str()),
        Some("audit_unavailable")
    );
    assert!(state_of(&e, "a").is_none(), "nothing ran");
    assert!(o.steps.is_empty());
}

#[test]
fn secrets_never_reach_results_evidence_audit_or_artifacts() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let secret = "s3cr3t-T0ken-value";
    let o = run_yaml(
        &e,
        "name: t\ninputs:\n  token: {type: string, secret: true}\nsteps:\n  - {id: show, tool: local, args: {action: exec, command: 'echo token={{ input.token }}; printf %s {{ input.token }} | base64'}}\n  - {id: err, tool: local, continue_on_error: true, args: {action: read, path: '/nonexistent/{{ input.token }}'}}\noutputs:\n  said: '{{ steps.show.stdout }}'\n",
        json!({"token": secret}),
    );
    assert_eq!(o.status, Status::Succeeded, "{:?}", o.error);
    assert!(!o.outputs.to_string().contains(secret), "{}", o.outputs);
    assert!(
        o.outputs["said"]
            .as_str()
            .is_some_and(|s| s.contains("[REDACTED]"))
    );
    let mut files = vec![e.config().audit_path()];
    for entry in walk(&o.dir) {
        files.push(entry);
    }
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        assert!(!text.contains(secret), "secret in {}", f.display());
        assert!(
            !text.contains("czNjcjN0LVQwa2VuLXZhbHVl"),
            "base64 secret in {}",
            f.display()
        );
    }
}

#[test]
fn a_long_secret_that_base64_wraps_is_masked_on_every_line() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let secret = format!("tok_{}", "0123456789abcdefghij".repeat(5));
    // the lines the tools write, from the tools themselves
    let mut lines = Vec::new();
    for wrap in [None, Some("64")] {
        let mut cmd = std::process::Command::new("base64");
        if let Some(w) = wrap {
            cmd.args(["-w", w]);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("base64");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), secret.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("base64");
        let text = String::from_utf8(out.stdout).expect("ascii");
        assert!(text.lines().count() > 1, "{text}");
        lines.extend(text.lines().map(str::to_owned));
    }
    let o = run_yaml(
        &e,
        "name: t\ninputs:\n  token: {type: string, secret: true}\nsteps:\n  - {id: show, tool: local, args: {action: exec, command: 'printf %s {{ input.token }} | base64; printf %s {{ input.token }} | base64 -w 64'}}\noutputs:\n  said: '{{ steps.show.stdout }}'\n",
        json!({"token": secret}),
    );
    assert_eq!(o.status, Status::Succeeded, "{:?}", o.error);
    let said = o.outputs["said"].as_str().expect("said");
    assert!(said.contains("[REDACTED]"), "{said}");
    let mut texts = vec![(String::from("outputs"), o.outputs.to_string())];
    for f in walk(&o.dir).into_iter().chain([e.config().audit_path()]) {
        texts.push((
            f.display().to_string(),
            std::fs::read_to_string(&f).expect("read"),
        ));
    }
    for (at, text) in texts {
        for line in &lines {
            assert!(!text.contains(line.as_str()), "`{line}` in {at}");
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push(p)
            }
        }
    }
    out
}

#[test]
fn evidence_is_one_record_per_transition_and_matches_its_schema() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let o = run_yaml(
        &e,
        "name: t\nsteps:\n  - {id: a, tool: state, args: {action: set, key: a, value: 1}}\n  - {id: b, tool: local, args: {action: exec, command: 'echo hi'}}\n  - {id: c, tool: state, when: false, args: {action: set, key: c, value: 1}}\n",
        json!({}),
    );
    assert!(o.ok(), "{:?}", o.error);
    let records = journal(&o);
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| match r {
            Record::RunStarted { .. } => "run_started",
            Record::NodeStarted { .. } => "node_started",
            Record::NodeFinished { .. } => "node_finished",
            Record::NodeResult { .. } => "node_result",
            Record::NodeSkipped { .. } => "node_skipped",
            Record::RunFinished { .. } => "run_finished",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "node_started",
            "node_finished",
            "node_result",
            "node_started",
            "node_finished",
            "node_result",
            "node_skipped",
            "run_finished"
        ]
    );
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/evidence.schema.json"
        ))
        .expect("schema"),
    )
    .expect("json");
    let v = jsonschema::draft202012::new(&schema).expect("valid schema");
    for line in std::fs::read_to_string(o.dir.join("journal.jsonl"))
        .expect("journal")
        .lines()
    {
        let rec: Value = serde_json::from_str(line).expect("json line");
        assert!(v.is_valid(&rec), "{rec}");
    }
    let finished = records.iter().find_map(|r| match r {
        Record::NodeFinished {
            step,
            outputs,
            artifacts,
            ..
        } if step == "b" => Some((outputs.clone(), artifacts.clone())),
        _ => None,
    });
    let (outputs, artifacts) = finished.expect("b finished");
    assert_eq!(outputs["stdout_bytes"], 3);
    assert_eq!(
        artifacts.len(),
        1,
        "stdout only: an empty stderr makes no file"
    );
    let text = engine::record::artifacts::read(
        &e.config().artifacts_root,
        &artifacts[0],
        engine::record::artifacts::From::Offset(0),
        100,
        e.redactor(),
    )
    .expect("artifact");
    assert_eq!(text["text"], "hi\n");
}

#[test]
fn state_sets_persist_and_reads_look_at_the_session_then_the_store() {
    let p = Project::new();
    let (a, b) = (p.engine(), p.engine());
    // no scope: persistent, so another engine (another process) sees it, through `get` and templates
    let o = run_yaml(
        &a,
        "name: t\nsteps:\n  - {id: s, tool: state, args: {action: set, key: k, value: kept}}\n",
        json!({}),
    );
    assert_eq!(
        step(&o, "s").result.as_ref().expect("r")["scope"],
        "persistent"
    );
    let o = run_yaml(
        &b,
        "name: t\nsteps:\n  - {id: g, tool: state, args: {action: get, key: k}}\noutputs:\n  seen: '{{ state.k }}'\n",
        json!({}),
    );
    let g = step(&o, "g").result.as_ref().expect("r");
    assert_eq!(
        (g["value"].clone(), g["scope"].clone()),
        (json!("kept"), json!("persistent"))
    );
    assert_eq!(o.outputs["seen"], "kept", "templates see the store too");
    // a session value of the same key answers first, and says so; `list` shows the session's
    let o = run_yaml(
        &b,
        "name: t\nsteps:\n  - {id: s, tool: state, args: {action: set, key: k, value: mine, scope: session}}\n  - {id: g, tool: state, args: {action: get, key: k}}\n  - {id: p, tool: state, args: {action: get, key: k, scope: persistent}}\n  - {id: l, tool: state, args: {action: list}}\noutputs:\n  seen: '{{ state.k }}'\n",
        json!({}),
    );
    let r = |id: &str| step(&o, id).result.clone().expect("r");
    assert_eq!(
        (r("g")["value"].clone(), r("g")["scope"].clone()),
        (json!("mine"), json!("session"))
    );
    assert_eq!(r("p")["value"], "kept");
    assert_eq!(r("l")["items"]["k"], "mine");
    assert_eq!(o.outputs["seen"], "mine");
    // `unset` with no scope removes it everywhere, and says where from
    let o = run_yaml(
        &b,
        "name: t\nsteps:\n  - {id: u, tool: state, args: {action: unset, key: k}}\n  - {id: g, tool: state, args: {action: get, key: k}}\n",
        json!({}),
    );
    assert_eq!(
        step(&o, "u").result.as_ref().expect("r")["removed_from"],
        json!(["session", "persistent"])
    );
    assert_eq!(step(&o, "g").result.as_ref().expect("r")["found"], false);
    assert_eq!(state_of(&a, "k"), None);
    // `any` cannot be where a value is written
    let o = run_yaml(
        &a,
        "name: t\nsteps:\n  - {id: s, tool: state, continue_on_error: true, args: {action: set, key: k, value: 1, scope: '{{ \"any\" }}'}}\n",
        json!({}),
    );
    assert_eq!(
        step(&o, "s").error.as_ref().map(|e| e.kind),
        Some(engine::actions::ErrorKind::InvalidArgs)
    );
}

#[test]
fn persistent_state_is_shared_between_engines() {
    let p = Project::new();
    let (a, b) = (p.engine(), p.engine());
    let o = run_yaml(
        &a,
        "name: t\nsteps:\n  - {id: s, tool: state, args: {action: set, key: shared, value: {n: 1}, scope: persistent}}\n",
        json!({}),
    );
    assert!(o.ok());
    let o = run_yaml(
        &b,
        "name: t\nsteps:\n  - {id: g, tool: state, args: {action: get, key: shared, scope: persistent}}\noutputs:\n  n: '{{ steps.g.value.n }}'\n",
        json!({}),
    );
    assert_eq!(o.outputs["n"], 1);
    let _ = Map::<String, Value>::new();
}

#[test]
fn a_large_output_is_streamed_with_bounded_capture_and_a_matching_digest() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    // 1 GiB through the pipe: the result keeps 1 MiB, the artifact has all of it
    let o = run_yaml(
        &e,
        "name: t\nsteps:\n  - {id: big, tool: local, args: {action: exec, command: 'head -c 1073741824 /dev/zero | tr \"\\\\0\" x'}}\n",
        json!({}),
    );
    assert!(o.ok(), "{:?}", o.error);
    let r = step(&o, "big").result.clone().expect("result");
    assert_eq!(r["stdout_bytes"], 1_073_741_824);
    assert_eq!(r["stdout_truncated"], true);
    assert_eq!(r["stdout"].as_str().map(str::len), Some(1024 * 1024));
    let expected = std::process::Command::new("sh")
        .arg("-c")
        .arg("head -c 1073741824 /dev/zero | tr '\\0' x | sha256sum")
        .output()
        .expect("sha256sum");
    let expected = String::from_utf8_lossy(&expected.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    assert_eq!(r["stdout_sha256"], expected);
}

#[test]
fn a_secret_deep_in_a_large_output_is_masked_in_its_artifact_whose_digest_is_of_what_was_written() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let secret = "s3cr3t-deep-T0ken";
    // ~7 MiB: runs of `x` of uneven lengths, each followed by the secret, so the secret falls at
    // every kind of place relative to the reads (past the first MiB they are large and handed on)
    let o = run_yaml(
        &e,
        "name: t\ninputs:\n  token: {type: string, secret: true}\nsteps:\n  - {id: big, tool: local, args: {action: exec, command: 'for i in $(seq 1 120); do head -c $((i * 997)) /dev/zero | tr \"\\\\0\" x; printf %s {{ input.token }}; done'}}\n",
        json!({"token": secret}),
    );
    assert!(o.ok(), "{:?}", o.error);
    let r = step(&o, "big").result.clone().expect("result");
    let path = stdout_artifact(&p, &r);
    let written = std::fs::read(&path).expect("artifact");
    let text = String::from_utf8_lossy(&written);
    assert!(!text.contains(secret), "the secret reached the artifact");
    assert_eq!(text.matches("[REDACTED]").count(), 120);
    assert_eq!(text.len(), 997 * (120 * 121 / 2) + 120 * "[REDACTED]".len());
    assert_eq!(r["stdout_bytes"], written.len());
    assert_eq!(r["stdout_sha256"], crate::sha256_file(&path));
}

#[test]
fn output_cut_by_a_timeout_mid_stream_has_the_digest_of_what_reached_its_artifact() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    // `yes` writes until it is killed: the capture is past its first MiB (hashed on a thread of its
    // own, read into handed-on buffers) when the timeout ends it
    let o = run_yaml(
        &e,
        "name: t\nsteps:\n  - {id: y, tool: local, timeout_ms: 400, args: {action: exec, command: 'yes abcdefghij'}}\n",
        json!({}),
    );
    let s = step(&o, "y");
    assert_eq!(s.error.as_ref().map(|e| e.kind.as_str()), Some("timeout"));
    let r = s.result.clone().expect("result");
    let bytes = r["stdout_bytes"].as_u64().expect("bytes");
    assert!(
        bytes > 2 << 20,
        "only {bytes} bytes: the large-stream path was not reached"
    );
    let path = stdout_artifact(&p, &r);
    assert_eq!(std::fs::metadata(&path).expect("artifact").len(), bytes);
    assert_eq!(r["stdout_sha256"], crate::sha256_file(&path));
}

/// The file of a step result's `stdout` artifact.
fn stdout_artifact(p: &Project, result: &Value) -> std::path::PathBuf {
    let uri = result["stdout_uri"].as_str().expect("an artifact");
    p.path()
        .join(uri.strip_prefix("artifact://").expect("scheme"))
}

#[test]
fn stdin_ref_reads_an_artifact_through_no_link() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let first = run_yaml(
        &e,
        "name: t\nsteps:\n  - {id: a, tool: local, args: {action: exec, command: 'echo from the artifact'}}\n",
        json!({}),
    );
    let uri = step(&first, "a").result.as_ref().expect("result")["stdout_uri"]
        .as_str()
        .expect("an artifact")
        .to_owned();
    let rel = uri.strip_prefix("artifact://").expect("scheme");
    std::os::unix::fs::symlink(p.path().join(rel), p.path().join(format!("{rel}-alias")))
        .expect("symlink");
    let o = run_yaml(
        &e,
        &format!(
            "name: t\nsteps:\n  - {{id: plain, tool: local, args: {{action: exec, command: cat, stdin_ref: '{uri}'}}}}\n  - {{id: linked, tool: local, args: {{action: exec, command: cat, stdin_ref: '{uri}-alias'}}}}\n"
        ),
        json!({}),
    );
    assert_eq!(
        step(&o, "plain").result.as_ref().expect("result")["stdout"],
        "from the artifact\n"
    );
    let refused = step(&o, "linked").error.as_ref().expect("refused");
    assert_eq!(refused.kind, "not_found");
    assert!(
        refused.message.contains("symbolic link"),
        "{}",
        refused.message
    );
}

#[test]
fn no_action_may_rewrite_the_audit_log() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let first = run_yaml(
        &e,
        "name: t\nsteps:\n  - {id: a, tool: state, args: {action: set, key: a, value: 1}}\n",
        json!({}),
    );
    assert!(first.ok());
    let audit = e.config().audit_path();
    let o = run_yaml(
        &e,
        &format!(
            "name: t\nsteps:\n  - {{id: w, tool: local, args: {{action: write, path: '{}', content: 'gone'}}}}\n",
            audit.display()
        ),
        json!({}),
    );
    assert_eq!(
        step(&o, "w").error.as_ref().map(|e| e.kind.as_str()),
        Some("refused")
    );
    assert_eq!(e.audit().verify().expect("verify").problem, None);
}

#[test]
fn no_action_may_rewrite_the_policy_or_the_targets() {
    let p = Project::new()
        .unsafe_local()
        .file("policy.yaml", "effects: {destructive: deny}\n")
        .targets(&json!({"box": {"host": "127.0.0.1", "username": "x"}}));
    let e = p.engine();
    let link = p.path().join("policy-alias.yaml");
    std::fs::hard_link(p.path().join("policy.yaml"), &link).expect("hard link");
    for (path, content) in [
        (
            p.path().join("policy.yaml"),
            "effects: {destructive: allow}",
        ),
        (p.path().join("targets.json"), "{}"),
        (link.clone(), "effects: {destructive: allow}"),
        // one not there yet would take effect too
        (p.path().join("policy.yml"), "effects: {destructive: allow}"),
    ] {
        let o = run_yaml(
            &e,
            &format!(
                "name: t\nsteps:\n  - {{id: w, tool: local, args: {{action: write, path: '{}', content: '{content}'}}}}\n",
                path.display()
            ),
            json!({}),
        );
        assert_eq!(
            step(&o, "w").error.as_ref().map(|e| e.kind.as_str()),
            Some("refused"),
            "{}",
            path.display()
        );
    }
    assert_eq!(
        std::fs::read_to_string(p.path().join("policy.yaml")).expect("policy"),
        "effects: {destructive: deny}\n"
    );
    assert!(!p.path().join("policy.yml").exists());
}

#[test]
fn no_action_may_write_infra_records_through_a_hard_link() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let first = run_yaml(
        &e,
        "name: t\nsteps:\n  - {id: a, tool: state, args: {action: set, key: a, value: 1, scope: persistent}}\n",
        json!({}),
    );
    assert!(first.ok());
    let elsewhere = p.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("dir");
    let audit = e.config().audit_path();
    let journal = first.dir.join("journal.jsonl");
    let links = [
        (audit.clone(), elsewhere.join("log")),
        (e.config().store_path(), elsewhere.join("db")),
        (journal.clone(), elsewhere.join("journal")),
    ];
    for (file, link) in &links {
        std::fs::hard_link(file, link).expect("hard link");
    }
    let journal_before = std::fs::read(&journal).expect("journal");
    let write = |path: &Path, append: bool| {
        let o = run_yaml(
            &e,
            &format!(
                "name: t\nsteps:\n  - {{id: w, tool: local, args: {{action: write, path: '{}', content: '{{\"forged\": 1}}', append: {append}}}}}\n",
                path.display()
            ),
            json!({}),
        );
        step(&o, "w").error.as_ref().map(|e| e.kind.to_string())
    };
    for (_, link) in &links {
        for append in [true, false] {
            let before = std::fs::read(&audit).expect("audit");
            assert_eq!(
                write(link, append).as_deref(),
                Some("refused"),
                "{} append {append}",
                link.display()
            );
            let after = std::fs::read(&audit).expect("audit");
            assert!(after.starts_with(&before), "the log was only appended to");
        }
    }
    let log = std::fs::read_to_string(&audit).expect("audit");
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["seq"].is_u64())),
        "only records in the log"
    );
    assert_eq!(e.verify_audit(None).expect("verify").problem, None);
    assert_eq!(std::fs::read(&journal).expect("journal"), journal_before);
    assert_eq!(
        e.store().expect("store").state_get("a").expect("get"),
        Some(json!(1))
    );
    // a file of one's own is written as before
    assert_eq!(write(&elsewhere.join("notes"), true), None);
    assert_eq!(write(&elsewhere.join("notes"), false), None);
}

#[test]
fn a_nested_runbook_runs_with_its_own_evidence() {
    let p = Project::new();
    let e = p.engine();
    let o = run_yaml(
        &e,
        "name: outer\nsteps:\n  - {id: inner, tool: runbook, args: {action: run, name: hello.world, input: {message: nested}}}\noutputs:\n  inner_status: '{{ steps.inner.status }}'\n",
        json!({}),
    );
    assert!(o.ok(), "{:?}", o.error);
    assert_eq!(o.outputs["inner_status"], "succeeded");
    assert_eq!(state_of(&e, "hello"), Some(json!("nested")));
    let inner_id = step(&o, "inner")
        .result
        .as_ref()
        .and_then(|r| r["run_id"].as_str().map(str::to_owned))
        .expect("id");
    assert_ne!(inner_id, o.run_id);
    assert!(
        e.store()
            .expect("store")
            .run(&inner_id)
            .expect("run")
            .is_some()
    );
}

#[test]
fn a_nested_dry_run_renders_the_plan_and_runs_nothing() {
    let p = Project::new();
    let e = p.engine();
    let o = run_yaml(
        &e,
        "name: outer\nsteps:\n  - {id: inner, tool: runbook, args: {action: run, name: hello.world, input: {message: dry}, dry_run: true}}\n",
        json!({}),
    );
    assert!(o.ok(), "{:?}", o.error);
    let r = step(&o, "inner").result.as_ref().expect("result");
    assert_eq!(r["dry_run"], true);
    assert!(r["plan"]["digest"].is_string(), "{r}");
    assert!(r.get("run_id").is_none(), "nothing ran: {r}");
    assert_eq!(state_of(&e, "hello"), None, "the nested step did not run");
    // the same checks as a real run: a bad input is refused
    let o = run_yaml(
        &e,
        "name: outer\nsteps:\n  - {id: inner, tool: runbook, args: {action: run, name: hello.world, input: {nope: 1}, dry_run: true}}\n",
        json!({}),
    );
    assert_eq!(
        step(&o, "inner").error.as_ref().map(|e| e.kind),
        Some(engine::actions::ErrorKind::InvalidArgs)
    );
}

#[test]
fn a_finished_command_leaves_no_background_process_behind() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let pid = p.path().join("pid");
    let o = run_yaml(
        &e,
        &format!(
            "name: t\nsteps:\n  - {{id: bg, tool: local, args: {{action: exec, command: 'sleep 1000 >/dev/null 2>&1 & echo $! > {}'}}}}\n",
            pid.display()
        ),
        json!({}),
    );
    assert!(o.ok(), "{:?}", o.error);
    let pid: i32 = std::fs::read_to_string(&pid)
        .expect("pid")
        .trim()
        .parse()
        .expect("number");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !crate::alive(pid),
        "background process {pid} outlived the call"
    );
}

#[test]
fn a_process_that_leaves_the_group_cannot_hold_a_call_past_its_timeout() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let pid = p.path().join("escaped");
    // `setsid` puts the child in a session of its own, out of the reach of the group kill, and it keeps
    // the output pipe: only its hold on the pipe gives it away
    let o = run_yaml(
        &e,
        &format!(
            "name: t\nsteps:\n  - id: hang\n    tool: local\n    timeout_ms: 500\n    args: {{action: exec, command: \"setsid sh -c 'echo $$ > {p}; exec sleep 600' & sleep 600\"}}\n",
            p = pid.display()
        ),
        json!({}),
    );
    assert_eq!(step(&o, "hang").status, Status::TimedOut);
    let pid: i32 = std::fs::read_to_string(&pid)
        .expect("pid")
        .trim()
        .parse()
        .expect("number");
    let err = step(&o, "hang").error.as_ref().expect("error");
    assert!(
        err.message.contains("left the command's process group"),
        "{}",
        err.message
    );
    let result = err.result.as_ref().expect("result");
    assert_eq!(result["escaped"][0]["pid"], pid, "{result}");
    assert_eq!(result["escaped"][0]["command"], "sleep");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!crate::alive(pid), "the escaped process {pid} survived");

    // a finished command whose escaped child holds the output is not held by it either
    let pid2 = p.path().join("escaped2");
    let o = run_yaml(
        &e,
        &format!(
            "name: t2\nsteps:\n  - id: quick\n    tool: local\n    args: {{action: exec, command: \"setsid sh -c 'echo $$ > {p}; exec sleep 600' & while [ ! -s {p} ]; do sleep 0.01; done; echo done\"}}\n",
            p = pid2.display()
        ),
        json!({}),
    );
    let s = step(&o, "quick");
    assert_eq!(
        s.result.as_ref().map(|r| r["stdout"].clone()),
        Some(json!("done\n")),
        "{:?}",
        s.error
    );
    let pid2: i32 = std::fs::read_to_string(&pid2)
        .expect("pid")
        .trim()
        .parse()
        .expect("number");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!crate::alive(pid2), "the escaped process {pid2} survived");
}

#[test]
fn arguments_that_render_invalid_from_a_result_fail_the_step_naming_the_field_and_run_nothing() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let marker = p.path().join("ran");
    let o = run_yaml(
        &e,
        &format!(
            "name: t\nsteps:\n  - {{id: word, tool: local, args: {{action: exec, command: 'printf soon'}}}}\n  - {{id: use, tool: local, args: {{action: exec, command: 'touch {}', timeout_ms: '{{{{ steps.word.stdout }}}}'}}}}\n",
            marker.display()
        ),
        json!({}),
    );
    assert!(!o.ok());
    let s = step(&o, "use");
    assert_eq!(s.status, Status::Failed);
    let err = s.error.as_ref().expect("error");
    assert_eq!(err.kind.to_string(), "invalid_args", "{err}");
    assert!(
        err.message
            .contains("rendered arguments of `local.exec` are invalid")
            && err.message.contains("/timeout_ms"),
        "{err}"
    );
    assert!(!marker.exists(), "the command did not run");
    // refused before the call: a `rejected` audit record, no intent
    let audit = std::fs::read_to_string(p.path().join("audit.jsonl")).expect("audit");
    let of_use: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["step"] == "use")
        .collect();
    assert_eq!(of_use.len(), 1, "{of_use:?}");
    assert_eq!(of_use[0]["kind"], "rejected");
}
