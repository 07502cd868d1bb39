//! `infra run --resume`: a failed run resumed with the recorded results of what succeeded (upstream
//! outputs reach downstream steps; nothing that succeeded runs twice), nested runbooks really run
//! again, `--from`, and every refusal (with its rule in the audit log).

use std::path::Path;

use serde_json::Value;

use crate::project::Project;
use crate::stdout_json;

/// Lines in a counter file (each run of a step appends one).
fn count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `infra run <args> --json`: the exit code and the outcome.
fn run_json(p: &Project, args: &[&str]) -> (Option<i32>, Value) {
    let out = p
        .infra()
        .arg("run")
        .args(args)
        .arg("--json")
        .output()
        .expect("infra");
    (out.status.code(), stdout_json(&out))
}

/// The audit log's `refused` records of resumes.
pub(crate) fn resume_refusals(profiles: &Path) -> Vec<Value> {
    std::fs::read_to_string(profiles.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "refused" && r["action"] == "resume")
        .collect()
}

fn rules(profiles: &Path) -> Vec<String> {
    resume_refusals(profiles)
        .iter()
        .map(|r| r["policy"]["rule"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `a` counts its runs and says `token-<n>`; `b` fails until `ok-b` exists, then writes what `a`
/// said to `b-saw`.
fn two_steps(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "name: pipe\ninputs:\n  n: {{type: integer, default: 1}}\nsteps:\n  - id: a\n    tool: local\n    args: {{action: exec, command: 'echo x >> {d}/count-a; echo token-$(wc -l < {d}/count-a)'}}\n  - id: b\n    tool: local\n    args: {{action: exec, command: 'test -f {d}/ok-b && echo got {{{{ steps.a.stdout | trim }}}} n={{{{ input.n }}}} > {d}/b-saw'}}\noutputs:\n  a_said: '{{{{ steps.a.stdout | trim }}}}'\n"
    )
}

fn journal(p: &Project, run: &str) -> Value {
    let out = p
        .infra()
        .args(["runs", "show", run, "--json"])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    stdout_json(&out)
}

#[test]
fn a_resumed_run_uses_the_recorded_upstream_output_and_does_not_run_it_again() {
    let p = Project::new().unsafe_local();
    let yaml = two_steps(p.path());
    let p = p.runbook("pipe", &yaml);
    let dir = p.path().to_owned();
    let (code, first) = run_json(&p, &["pipe"]);
    assert_eq!(code, Some(1), "{first}");
    assert_eq!(first["status"], "failed");
    assert_eq!(first["steps"][0]["status"], "succeeded");
    assert_eq!(count(&dir.join("count-a")), 1);
    let id = first["run_id"].as_str().expect("id").to_owned();

    // the condition is fixed; the resume (by a prefix) runs `b` with what `a` said the first time
    std::fs::write(dir.join("ok-b"), "").expect("marker");
    let (code, second) = run_json(&p, &["--resume", &id[..10]]);
    assert_eq!(code, Some(0), "{second}");
    assert_eq!(second["status"], "succeeded");
    assert_eq!(second["resumed_from"], id.as_str());
    assert_ne!(second["run_id"], id.as_str());
    assert_eq!(count(&dir.join("count-a")), 1, "`a` did not run again");
    assert_eq!(
        std::fs::read_to_string(dir.join("b-saw")).expect("b ran"),
        "got token-1 n=1\n"
    );
    assert_eq!(second["outputs"]["a_said"], "token-1");
    assert_eq!(second["steps"][0]["id"], "a");
    assert_eq!(second["steps"][0]["status"], "succeeded");
    assert_eq!(
        second["steps"][0]["reason"],
        format!("reused from run {id}").as_str()
    );
    assert_eq!(second["steps"][1]["attempts"], 1);

    // the journal shows the link and the reuse (with the run that ran it), and no start of `a`
    let new_id = second["run_id"].as_str().expect("id").to_owned();
    let shown = journal(&p, &new_id);
    assert_eq!(shown["run"]["resumed_from"], id.as_str());
    let records = shown["records"].as_array().expect("records");
    assert_eq!(records[0]["resumed_from"], id.as_str());
    assert!(
        records.iter().any(|r| r["event"] == "node_result"
            && r["step"] == "a"
            && r["reused_from"] == id.as_str()),
        "{records:?}"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["event"] == "node_started" && r["step"] == "a"),
        "{records:?}"
    );
    let listed = p
        .infra()
        .args(["runs", "show", &new_id])
        .output()
        .expect("show");
    let listed = text(&listed.stdout);
    assert!(
        listed.contains(&format!("resuming run {id}"))
            && listed.contains(&format!("a reused from run {id}")),
        "{listed}"
    );
    let report = std::fs::read_to_string(
        Path::new(shown["run"]["dir"].as_str().expect("dir")).join("report.html"),
    )
    .expect("report");
    assert!(report.contains(&format!("reused from run {id}")));
    // the report the run drew from what it held is the one its records on disk draw
    let again = p
        .infra()
        .args(["report", &new_id, "-o", "-"])
        .output()
        .expect("report");
    assert_eq!(text(&again.stdout), report);

    // the audit log links the runs too
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).expect("audit");
    assert!(
        audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|r| r["kind"] == "run_started"
                && r["run_id"] == new_id.as_str()
                && r["resumed_from"] == id.as_str()),
        "{audit}"
    );

    // a succeeded run has nothing to resume: refused, audited with its rule, nothing ran
    let out = p
        .infra()
        .args(["run", "--resume", &new_id])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("succeeded: there is nothing to resume")
            && text(&out.stderr).contains("--from"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(rules(&dir), ["resume.succeeded"]);
    assert_eq!(count(&dir.join("count-a")), 1);

    // resuming the resumed run follows the chain: `a` is still the first run's
    let out = p
        .infra()
        .args(["run", "--resume", &new_id, "--from", "b", "--json"])
        .output()
        .expect("infra");
    let third = stdout_json(&out);
    assert_eq!(third["status"], "succeeded", "{third}");
    assert_eq!(
        third["steps"][0]["reason"],
        format!("reused from run {id}").as_str()
    );
    assert_eq!(count(&dir.join("count-a")), 1);
}

#[test]
fn from_reruns_a_step_that_succeeded_and_everything_downstream_of_it() {
    let p = Project::new().unsafe_local();
    let d = p.path().display().to_string();
    let step = |id: &str, extra: &str| {
        format!(
            "  - id: {id}\n    tool: local\n{extra}    args: {{action: exec, command: 'echo x >> {d}/count-{id}; echo {id}$(wc -l < {d}/count-{id})'}}\n"
        )
    };
    let yaml = format!(
        "name: chain\nflow: dag\nsteps:\n{}{}{}{}outputs:\n  c: '{{{{ steps.c.stdout | trim }}}}'\n",
        step("a", ""),
        step("b", "    needs: [a]\n"),
        step("c", "    needs: [b]\n"),
        step("side", ""),
    );
    let p = p.runbook("chain", &yaml);
    let dir = p.path().to_owned();
    let (code, first) = run_json(&p, &["chain"]);
    assert_eq!(code, Some(0), "{first}");
    let id = first["run_id"].as_str().expect("id").to_owned();

    let (code, again) = run_json(&p, &["--resume", &id, "--from", "b"]);
    assert_eq!(code, Some(0), "{again}");
    assert_eq!(again["resumed_from"], id.as_str());
    let counts: Vec<usize> = ["a", "b", "c", "side"]
        .iter()
        .map(|s| count(&dir.join(format!("count-{s}"))))
        .collect();
    assert_eq!(counts, [1, 2, 2, 1], "b and c again; a and side reused");
    assert_eq!(again["outputs"]["c"], "c2");

    // a step that is not there: refused with a "did you mean", nothing ran
    let out = p
        .infra()
        .args(["run", "--resume", &id, "--from", "bb"])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("has no step `bb`") && err.contains("did you mean `b`?"),
        "{err}"
    );
    assert_eq!(rules(&dir), ["resume.unknown_step"]);
    assert_eq!(count(&dir.join("count-b")), 2);
}

#[test]
fn a_nested_runbook_step_that_failed_really_runs_again() {
    let p = Project::new().unsafe_local();
    let d = p.path().display().to_string();
    let p = p
        .runbook(
            "child",
            &format!("name: child\nsteps:\n  - id: work\n    tool: local\n    args: {{action: exec, command: 'echo x >> {d}/count-child; test -f {d}/ok-child && echo child-done'}}\noutputs:\n  said: '{{{{ steps.work.stdout | trim }}}}'\n"),
        )
        .runbook(
            "parent",
            &format!("name: parent\nsteps:\n  - id: prep\n    tool: local\n    args: {{action: exec, command: 'echo x >> {d}/count-prep'}}\n  - id: inner\n    tool: runbook\n    args: {{action: run, name: child}}\n  - id: after\n    tool: local\n    args: {{action: exec, command: 'echo {{{{ steps.inner.outputs.said }}}} > {d}/after'}}\n"),
        );
    let dir = p.path().to_owned();
    let (code, first) = run_json(&p, &["parent"]);
    assert_eq!(code, Some(1), "{first}");
    assert_eq!(first["steps"][1]["status"], "failed");
    let child_first = first["steps"][1]["result"]["run_id"]
        .as_str()
        .expect("the child's run")
        .to_owned();
    assert_eq!(count(&dir.join("count-child")), 1);

    std::fs::write(dir.join("ok-child"), "").expect("marker");
    let id = first["run_id"].as_str().expect("id");
    // the child's text is part of the parent's plan: edited, it is a changed step
    let child = dir.join("runbooks/child.yaml");
    let original = std::fs::read_to_string(&child).expect("child");
    std::fs::write(&child, original.replace("count-child", "count-edited")).expect("edit");
    let out = p
        .infra()
        .args(["run", "--resume", id])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("the step `inner` changed (nested_digest)"),
        "{err}"
    );
    assert!(!dir.join("count-edited").exists());
    std::fs::write(&child, original).expect("edit back");
    let (code, second) = run_json(&p, &["--resume", id]);
    assert_eq!(code, Some(0), "{second}");
    // the child ran again, as a new run, and what it said reached the step after it
    assert_eq!(count(&dir.join("count-child")), 2);
    let child_second = second["steps"][1]["result"]["run_id"]
        .as_str()
        .expect("the child's run");
    assert_ne!(child_second, child_first);
    assert_eq!(second["steps"][1]["result"]["status"], "succeeded");
    assert_eq!(
        std::fs::read_to_string(dir.join("after")).expect("after ran"),
        "child-done\n"
    );
    assert_eq!(count(&dir.join("count-prep")), 1, "prep did not run again");
}

#[test]
fn a_changed_runbook_or_input_is_refused_naming_the_change_and_runs_with_force() {
    let p = Project::new().unsafe_local();
    let yaml = two_steps(p.path());
    let p = p.runbook("pipe", &yaml);
    let dir = p.path().to_owned();
    let (_, first) = run_json(&p, &["pipe"]);
    let id = first["run_id"].as_str().expect("id").to_owned();
    std::fs::write(dir.join("ok-b"), "").expect("marker");

    // another input: refused, naming it
    let out = p
        .infra()
        .args(["run", "--resume", &id, "--input", "n=2"])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("the input `n` was 1, now 2"), "{err}");
    assert!(err.contains("--force"), "{err}");

    // the runbook changed (step `b` writes elsewhere): refused, naming the step
    let changed = two_steps(&dir).replace("b-saw", "b-saw2");
    std::fs::write(dir.join("runbooks/pipe.yaml"), changed).expect("edit");
    let out = p
        .infra()
        .args(["run", "--resume", &id])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("the runbook's text changed") && err.contains("the step `b` changed (args"),
        "{err}"
    );
    assert!(!err.contains("step `a`"), "{err}");
    assert!(!dir.join("b-saw2").exists() && !dir.join("b-saw").exists());
    assert_eq!(rules(&dir), ["resume.changed", "resume.changed"]);
    let audited = resume_refusals(&dir);
    assert!(
        audited[1]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("the step `b` changed"),
        "{audited:?}"
    );

    // with --force: the changed step runs, the unchanged one is reused
    let (code, forced) = run_json(&p, &["--resume", &id, "--force"]);
    assert_eq!(code, Some(0), "{forced}");
    assert_eq!(count(&dir.join("count-a")), 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("b-saw2")).expect("b ran"),
        "got token-1 n=1\n"
    );
}

#[test]
fn unknown_ambiguous_running_and_gone_runs_are_refused_and_audited() {
    let p = Project::new().unsafe_local();
    let d = p.path().display().to_string();
    let p = p
        .runbook(
            "quick",
            "name: quick\nsteps:\n  - {id: s, tool: state, args: {action: get, key: k}}\n",
        )
        .runbook(
            "slow",
            &format!("name: slow\nsteps:\n  - id: wait\n    tool: local\n    args: {{action: exec, command: 'echo $$ > {d}/pid; while [ ! -f {d}/release ]; do sleep 0.02; done; false'}}\n"),
        );
    let dir = p.path().to_owned();

    // unknown
    let out = p
        .infra()
        .args(["run", "--resume", "fffffffffffffffff"])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no run has an id starting with `fffffffffffffffff`"),
        "{}",
        text(&out.stderr)
    );

    // ambiguous: 17 runs share a first hex digit somewhere
    let engine = p.engine();
    let rb = engine
        .catalog()
        .get("quick")
        .expect("quick")
        .runbook
        .clone();
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..17 {
        let o = engine
            .run_runbook(
                rb.clone(),
                &serde_json::Map::new(),
                &engine::run::CancelToken::new(),
                0,
                None,
            )
            .expect("runs");
        ids.push(o.run_id);
    }
    let shared = ids
        .iter()
        .find(|a| ids.iter().filter(|b| b[..1] == a[..1]).count() > 1)
        .expect("two ids share a first digit")[..1]
        .to_owned();
    let out = p
        .infra()
        .args(["run", "--resume", &shared])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("the run id prefix `{shared}` is ambiguous")),
        "{}",
        text(&out.stderr)
    );

    // still running
    let mut child = p
        .command()
        .args(["run", "slow", "-q"])
        .spawn()
        .expect("spawn");
    assert!(!crate::pid_written(&dir.join("pid"), 30).is_empty());
    let runs = stdout_json(
        &p.infra()
            .args(["runs", "list", "--json"])
            .output()
            .expect("list"),
    );
    let running = runs
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["runbook"] == "slow")
        .expect("the slow run")["run_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let out = p
        .infra()
        .args(["run", "--resume", &running])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is still running"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(dir.join("release"), "").expect("release");
    assert!(!child.wait().expect("wait").success());

    // the runbook is gone
    std::fs::remove_file(dir.join("runbooks/slow.yaml")).expect("rm");
    let out = p
        .infra()
        .args(["run", "--resume", &running])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("which cannot be found now"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        rules(&dir),
        [
            "resume.unknown_run",
            "resume.ambiguous_id",
            "resume.running",
            "resume.runbook_gone"
        ]
    );
    for r in resume_refusals(&dir) {
        assert_eq!(r["policy"]["decision"], "deny");
        assert_eq!(r["front_end"], "cli");
    }
}

#[test]
fn a_result_that_held_a_secret_is_not_reused_and_from_runs_it_again() {
    let p = Project::new().unsafe_local();
    let d = p.path().display().to_string();
    let p = p.runbook(
        "secretive",
        &format!("name: secretive\ninputs:\n  token: {{type: string, secret: true}}\nsteps:\n  - id: a\n    tool: state\n    args: {{action: set, key: t, value: '{{{{ input.token }}}}', scope: session}}\n  - id: b\n    tool: local\n    args: {{action: exec, command: 'test -f {d}/ok-b'}}\n"),
    );
    let dir = p.path().to_owned();
    let (_, first) = run_json(&p, &["secretive", "--input", "token=hunter2-secret"]);
    let id = first["run_id"].as_str().expect("id").to_owned();
    std::fs::write(dir.join("ok-b"), "").expect("marker");
    // the secret input is not recorded: it must be given again
    let out = p
        .infra()
        .args(["run", "--resume", &id])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("secret input(s) `token`"),
        "{}",
        text(&out.stderr)
    );
    // `a`'s result held it (session state is kept as given), so it was not recorded either
    let out = p
        .infra()
        .args(["run", "--resume", &id, "--input", "token=hunter2-secret"])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("step `a` succeeded") && err.contains("--from a"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let (code, again) = run_json(
        &p,
        &[
            "--resume",
            &id,
            "--input",
            "token=hunter2-secret",
            "--from",
            "a",
        ],
    );
    assert_eq!(code, Some(0), "{again}");
    assert_eq!(again["steps"][0]["attempts"], 1, "`a` ran again");
    assert!(again["steps"][0]["reason"].is_null(), "{again}");
    assert_eq!(
        rules(&dir),
        ["resume.secret_inputs", "resume.result_unkept"]
    );
    let journal = std::fs::read_to_string(
        Path::new(journal(&p, &id)["run"]["dir"].as_str().expect("dir")).join("journal.jsonl"),
    )
    .expect("journal");
    assert!(!journal.contains("hunter2"));
}

#[test]
fn a_resumed_run_that_does_destructive_work_needs_an_approval_of_its_digest_again() {
    let keys = tempfile::tempdir().expect("keys");
    let p = Project::new().unsafe_local();
    let d = p.path().display().to_string();
    let p = p.runbook(
        "gated",
        &format!("name: gated\nsteps:\n  - id: a\n    tool: local\n    args: {{action: exec, command: 'echo x >> {d}/count-a'}}\n  - id: drop\n    tool: local\n    effects: destructive\n    args: {{action: exec, command: 'test -f {d}/ok-drop && echo x >> {d}/dropped'}}\n"),
    );
    let dir = p.path().to_owned();
    let key = crate::change_control::approver(&dir, keys.path(), "");
    let (_, refused) = run_json(&p, &["gated"]);
    assert_eq!(refused["error"]["kind"], "approval_required", "{refused}");
    let digest = refused["approval"]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    assert!(
        crate::change_control::approve(&dir, &key, &digest, "15m")
            .status
            .success()
    );
    let (code, failed) = run_json(&p, &["gated"]);
    assert_eq!(code, Some(1), "{failed}");
    assert_eq!(failed["status"], "failed");
    let id = failed["run_id"].as_str().expect("id").to_owned();
    std::fs::write(dir.join("ok-drop"), "").expect("marker");

    // the approval was used by the run; the resumed run is judged again, for the same digest
    let (code, gated) = run_json(&p, &["--resume", &id]);
    assert_eq!(code, Some(1), "{gated}");
    assert_eq!(gated["status"], "refused");
    assert_eq!(gated["error"]["kind"], "approval_required", "{gated}");
    assert_eq!(gated["approval"]["digest"], digest.as_str());
    assert_eq!(gated["resumed_from"], id.as_str());
    assert!(!dir.join("dropped").exists());

    assert!(
        crate::change_control::approve(&dir, &key, &digest, "15m")
            .status
            .success()
    );
    let (code, done) = run_json(&p, &["--resume", &id]);
    assert_eq!(code, Some(0), "{done}");
    assert_eq!(count(&dir.join("count-a")), 1);
    assert_eq!(count(&dir.join("dropped")), 1);
}

#[test]
fn a_step_whose_rollback_ran_runs_again_and_finally_runs_in_every_run() {
    let p = Project::new().unsafe_local();
    let d = p.path().display().to_string();
    let p = p.runbook(
        "undo",
        &format!("name: undo\nflow: dag\nsteps:\n  - id: make\n    tool: local\n    args: {{action: exec, command: 'echo x >> {d}/count-make'}}\n    rollback: {{tool: local, args: {{action: exec, command: 'echo x >> {d}/count-undo'}}}}\n  - id: keep\n    tool: local\n    args: {{action: exec, command: 'echo x >> {d}/count-keep'}}\n  - id: fail\n    tool: local\n    needs: [make, keep]\n    args: {{action: exec, command: 'test -f {d}/ok'}}\nfinally:\n  - id: tidy\n    tool: local\n    args: {{action: exec, command: 'echo x >> {d}/count-tidy'}}\n"),
    );
    let dir = p.path().to_owned();
    let (_, first) = run_json(&p, &["undo"]);
    assert_eq!(first["status"], "failed", "{first}");
    assert_eq!(
        count(&dir.join("count-undo")),
        1,
        "the failed run rolled `make` back"
    );
    std::fs::write(dir.join("ok"), "").expect("marker");
    let id = first["run_id"].as_str().expect("id");
    let (code, second) = run_json(&p, &["--resume", id]);
    assert_eq!(code, Some(0), "{second}");
    // `make` was undone, so it runs again; `keep` (no rollback, and not after `make`) is reused;
    // `tidy` runs again
    assert_eq!(count(&dir.join("count-make")), 2);
    assert_eq!(count(&dir.join("count-keep")), 1);
    assert_eq!(count(&dir.join("count-tidy")), 2);
    assert_eq!(count(&dir.join("count-undo")), 1);
}

#[test]
fn a_big_result_is_kept_as_an_artifact_checked_by_its_digest() {
    let p = Project::new().unsafe_local();
    let d = p.path().display().to_string();
    let p = p.runbook(
        "big",
        &format!("name: big\nsteps:\n  - id: a\n    tool: local\n    args: {{action: exec, command: 'echo x >> {d}/count-a; head -c 100000 /dev/zero | tr \"\\\\0\" y'}}\n  - id: b\n    tool: local\n    args: {{action: exec, command: 'test -f {d}/ok-b && printf %s {{{{ steps.a.stdout | length }}}} > {d}/b-saw'}}\n"),
    );
    let dir = p.path().to_owned();
    let (_, first) = run_json(&p, &["big"]);
    assert_eq!(first["status"], "failed", "{first}");
    let id = first["run_id"].as_str().expect("id").to_owned();
    let run_dir = journal(&p, &id)["run"]["dir"]
        .as_str()
        .expect("dir")
        .to_owned();
    let kept = Path::new(&run_dir).join("a/result.json");
    let records = journal(&p, &id)["records"].clone();
    let result = records
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["event"] == "node_result")
        .expect("node_result")
        .clone();
    assert!(result["result"].is_null(), "{result}");
    assert_eq!(
        result["artifact"]["sha256"],
        crate::sha256_file(&kept).as_str()
    );
    std::fs::write(dir.join("ok-b"), "").expect("marker");

    // a result changed after it was written is not used
    let good = std::fs::read(&kept).expect("kept");
    std::fs::write(&kept, b"{}").expect("tamper");
    let out = p
        .infra()
        .args(["run", "--resume", &id])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the recorded result of step `a`")
            && text(&out.stderr).contains("SHA-256"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join("b-saw").exists());
    std::fs::write(&kept, good).expect("restore");
    let (code, second) = run_json(&p, &["--resume", &id]);
    assert_eq!(code, Some(0), "{second}");
    assert_eq!(count(&dir.join("count-a")), 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("b-saw")).expect("b ran"),
        "100000"
    );
}

#[test]
fn a_step_that_succeeded_without_a_recorded_result_is_not_run_twice_silently() {
    let p = Project::new().unsafe_local();
    let yaml = two_steps(p.path());
    let p = p.runbook("pipe", &yaml);
    let dir = p.path().to_owned();
    let (_, first) = run_json(&p, &["pipe"]);
    let id = first["run_id"].as_str().expect("id").to_owned();
    // as a run recorded before results were kept: no `node_result`
    let path =
        Path::new(journal(&p, &id)["run"]["dir"].as_str().expect("dir")).join("journal.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .expect("journal")
        .lines()
        .filter(|l| !l.contains("\"node_result\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, lines.concat()).expect("rewrite");
    std::fs::write(dir.join("ok-b"), "").expect("marker");
    let out = p
        .infra()
        .args(["run", "--resume", &id])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("step `a` succeeded")
            && err.contains("was not recorded")
            && err.contains("--from a"),
        "{err}"
    );
    assert_eq!(count(&dir.join("count-a")), 1);
    let (code, again) = run_json(&p, &["--resume", &id, "--from", "a"]);
    assert_eq!(code, Some(0), "{again}");
    assert_eq!(count(&dir.join("count-a")), 2);
    assert_eq!(rules(&dir), ["resume.result_unkept"]);
}
