//! `infra run`, `runs`, `audit`, `state` and `artifacts` through the binary.

use std::path::Path;
use std::process::{Command as Std, Stdio};

use crate::stdout_json;

/// A real repository: one commit on `main`, one modified file.
fn repo(dir: &Path) {
    let git = |args: &[&str]| {
        let st = Std::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .status()
            .expect("git");
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(dir.join("a.txt"), "one\n").expect("write");
    git(&["add", "a.txt"]);
    git(&["commit", "-q", "-m", "first commit"]);
    std::fs::write(dir.join("a.txt"), "one\ntwo\n").expect("write");
}

#[test]
fn repo_snapshot_runs_on_the_current_repository_with_no_opt_in() {
    let profiles = tempfile::tempdir().expect("profiles");
    let work = tempfile::tempdir().expect("repo");
    repo(work.path());
    let out = crate::infra_in(profiles.path(), work.path())
        .args(["run", "repo.snapshot", "--json"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&out);
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["outputs"]["branch"], "main");
    assert_eq!(v["outputs"]["commits"][0]["summary"], "first commit");
    assert_eq!(v["outputs"]["diffstat"]["insertions"], 1);
    assert_eq!(v["outputs"]["status"][0]["path"], "a.txt");
    assert!(
        v["evidence"]
            .as_str()
            .is_some_and(|u| u.starts_with("artifact://runs/repo.snapshot/"))
    );
    // the human form, and the run is listed
    let human = crate::infra_in(profiles.path(), work.path())
        .args(["run", "repo.snapshot"])
        .output()
        .expect("run");
    assert_eq!(human.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&human.stdout).contains("repo.snapshot succeeded"));
    let runs = crate::infra_in(profiles.path(), work.path())
        .args(["runs", "list", "--json"])
        .output()
        .expect("runs");
    assert_eq!(stdout_json(&runs).as_array().map(Vec::len), Some(2));
    let verify = crate::infra_in(profiles.path(), work.path())
        .args(["audit", "verify"])
        .output()
        .expect("verify");
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn bad_inputs_are_usage_errors_run_nothing_and_are_audited() {
    let profiles = tempfile::tempdir().expect("profiles");
    let out = crate::infra_in(profiles.path(), profiles.path())
        .args(["run", "hello.world"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing input `message`"));
    let out = crate::infra_in(profiles.path(), profiles.path())
        .args(["run", "hello.world", "--input", "mesage=hi"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `message`?"));
    // nothing ran; each refusal is audited (input names, not values) like a refused MCP call
    let audit = std::fs::read_to_string(profiles.path().join("audit.jsonl")).expect("audit");
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(records.len(), 2, "{audit}");
    assert!(
        records
            .iter()
            .all(|r| r["kind"] == "rejected" && r["front_end"] == "cli")
    );
    assert_eq!(records[1]["args"]["inputs"], serde_json::json!(["mesage"]));
    assert!(!audit.contains("hi\""), "{audit}");
}

#[test]
fn a_failing_run_exits_one_and_state_is_shared_with_the_cli() {
    let profiles = tempfile::tempdir().expect("profiles");
    let rb = profiles.path().join("t.yaml");
    std::fs::write(
        &rb,
        "name: t\nsteps:\n  - {id: keep, tool: state, args: {action: set, key: deploy.version, value: 42, scope: persistent}}\n  - {id: boom, tool: local, args: {action: exec, command: 'exit 7'}}\n",
    )
    .expect("write");
    let out = crate::infra_in(profiles.path(), profiles.path())
        .env("INFRA_UNSAFE_LOCAL", "1")
        .arg("run")
        .arg(&rb)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exited with status 7"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = crate::infra_in(profiles.path(), profiles.path())
        .args(["state", "get", "deploy.version"])
        .output()
        .expect("get");
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "42");
    crate::infra_in(profiles.path(), profiles.path())
        .args(["state", "set", "deploy.env", "staging"])
        .assert()
        .code(0);
    let list = crate::infra_in(profiles.path(), profiles.path())
        .args(["state", "list", "deploy."])
        .output()
        .expect("list");
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "deploy.env = \"staging\"\ndeploy.version = 42\n"
    );
    let list = crate::infra_in(profiles.path(), profiles.path())
        .args(["state", "list", "deploy.", "--json"])
        .output()
        .expect("list");
    let v = stdout_json(&list);
    assert_eq!(v["items"]["deploy.env"], "staging");
    assert_eq!(v["items"]["deploy.version"], 42);
}

#[test]
fn a_corrupted_audit_record_is_found_by_verify() {
    let profiles = tempfile::tempdir().expect("profiles");
    for _ in 0..2 {
        crate::infra_in(profiles.path(), profiles.path())
            .args(["run", "hello.world", "--input", "message=hi"])
            .assert()
            .code(0);
    }
    let path = profiles.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&path).expect("audit");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 6);
    let mut changed: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    changed[2] = changed[2].replace("\"state\"", "\"local\"");
    assert_ne!(changed[2], lines[2]);
    std::fs::write(&path, changed.join("\n") + "\n").expect("write");
    let out = crate::infra_in(profiles.path(), profiles.path())
        .args(["audit", "verify"])
        .output()
        .expect("verify");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BROKEN at line 3"), "{text}");
}

#[test]
fn verify_reports_a_log_cut_emptied_or_deleted() {
    let profiles = tempfile::tempdir().expect("profiles");
    for _ in 0..2 {
        crate::infra_in(profiles.path(), profiles.path())
            .args(["run", "hello.world", "--input", "message=hi"])
            .assert()
            .code(0);
    }
    let verify = |json: bool| {
        let mut c = crate::infra_in(profiles.path(), profiles.path());
        c.args(["audit", "verify"]);
        if json {
            c.arg("--json");
        }
        c.output().expect("verify")
    };
    assert_eq!(verify(false).status.code(), Some(0));
    let path = profiles.path().join("audit.jsonl");
    let whole = std::fs::read_to_string(&path).expect("audit");
    let n = whole.lines().count();
    assert!(n >= 6, "{whole}");
    let cut: String = whole
        .lines()
        .take(n - 2)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, cut).expect("cut");
    let out = verify(false);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("records {} to {n} are missing", n - 1)),
        "{text}"
    );
    let v = stdout_json(&verify(true));
    assert_eq!(
        (v["ok"].clone(), v["problem"]["seq"].clone()),
        (false.into(), (n - 1).into())
    );
    std::fs::write(&path, "").expect("empty");
    let out = verify(false);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is empty"));
    std::fs::remove_file(&path).expect("delete");
    let out = verify(false);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is missing"));
    std::fs::write(&path, &whole).expect("restore");
    assert_eq!(verify(false).status.code(), Some(0));
}

#[test]
fn a_checkpoint_kept_elsewhere_finds_a_rewritten_history() {
    let profiles = tempfile::tempdir().expect("profiles");
    let kept = tempfile::tempdir().expect("elsewhere");
    let infra = || crate::infra_in(profiles.path(), profiles.path());
    let hello = || {
        infra()
            .args(["run", "hello.world", "--input", "message=hi"])
            .assert()
            .code(0);
    };
    let out = infra()
        .args(["audit", "checkpoint"])
        .output()
        .expect("checkpoint");
    assert_eq!(out.status.code(), Some(1), "an empty log has no head");
    hello();
    let out = infra()
        .args(["audit", "checkpoint"])
        .output()
        .expect("checkpoint");
    assert_eq!(out.status.code(), Some(0));
    let word = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (seq, hash) = word.split_once(':').expect("<seq>:<hash>");
    assert_eq!(hash.len(), 64, "{word}");
    let json = stdout_json(
        &infra()
            .args(["audit", "checkpoint", "--json"])
            .output()
            .expect("json"),
    );
    assert_eq!(json["checkpoint"], word.as_str());
    assert_eq!(json["seq"].to_string(), seq);
    let file = kept.path().join("checkpoint.json");
    std::fs::write(&file, json.to_string()).expect("keep");
    hello();
    let verify = |against: &str| {
        infra()
            .args(["audit", "verify", "--against", against])
            .output()
            .expect("verify")
    };
    for against in [word.as_str(), file.to_str().expect("utf-8")] {
        let out = verify(against);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // a new history in place of the old one, store included: the store's head cannot tell
    std::fs::remove_file(profiles.path().join("audit.jsonl")).expect("log");
    for f in ["store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm"] {
        let _ = std::fs::remove_file(profiles.path().join(f));
    }
    for _ in 0..3 {
        hello();
    }
    infra().args(["audit", "verify"]).assert().code(0);
    for against in [word.as_str(), file.to_str().expect("utf-8")] {
        let out = verify(against);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("record {seq} is not the checkpoint's")),
            "{text}"
        );
    }
    let out = verify("not-a-checkpoint");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no checkpoint found"));
}

/// Rewrites the audit record on `line` (1-based) with `edit` and recomputes the plain chain after it
/// (`prev` and `hash`, by `sha256sum`), as anyone who can write the file can; `mac` is left as it was.
fn forge(path: &Path, line: usize, edit: impl Fn(&str) -> String) {
    let sha = |b: &[u8]| crate::sha256_reader(b);
    let text = std::fs::read_to_string(path).expect("audit");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[line - 1] = edit(&lines[line - 1]);
    for i in line - 1..lines.len() {
        let mut v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&lines[i]).expect("record");
        if i > 0 {
            v.insert("prev".into(), sha(lines[i - 1].as_bytes()).into());
        }
        v.shift_remove("hash");
        let body = serde_json::Value::Object(v).to_string();
        let hash = sha(body.as_bytes());
        lines[i] = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
    }
    std::fs::write(path, lines.join("\n") + "\n").expect("write");
}

#[test]
fn with_an_audit_key_a_forged_record_is_found_and_the_key_never_shows() {
    const KEY: &str = "k3y-only-the-operator-holds-0123456789";
    let profiles = tempfile::tempdir().expect("profiles");
    let rb = profiles.path().join("leak.yaml");
    std::fs::write(
        &rb,
        "name: leak\nsteps:\n  - {id: show, tool: local, args: {action: exec, command: 'echo \"key=$INFRA_AUDIT_KEY\"; env'}}\n",
    )
    .expect("write");
    let infra = |key: Option<&str>| {
        let mut c = crate::infra_in(profiles.path(), profiles.path());
        if let Some(k) = key {
            c.env("INFRA_AUDIT_KEY", k);
        }
        c
    };
    let mut outputs = Vec::new();
    let run = infra(Some(KEY))
        .env("INFRA_UNSAFE_LOCAL", "1")
        .args(["run", "--json"])
        .arg(&rb)
        .output()
        .expect("run");
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        stdout_json(&run)["steps"][0]["result"]["stdout"]
            .as_str()
            .map(|s| s.starts_with("key=\n")),
        Some(true)
    );
    outputs.push(run);
    for _ in 0..2 {
        outputs.push(
            infra(Some(KEY))
                .args(["run", "hello.world", "--input", "message=hi"])
                .output()
                .expect("run"),
        );
    }
    let tail = infra(Some(KEY))
        .args(["audit", "tail", "--json"])
        .output()
        .expect("tail");
    let text = String::from_utf8_lossy(&tail.stdout).into_owned();
    assert!(text.lines().all(|l| l.contains("\"mac\":\"")), "{text}");
    outputs.push(tail);
    let verify = |key: Option<&str>| {
        infra(key)
            .args(["audit", "verify"])
            .output()
            .expect("verify")
    };
    let ok = verify(Some(KEY));
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    outputs.push(ok);
    outputs.push(
        infra(Some(KEY))
            .args(["doctor", "--json"])
            .output()
            .expect("doctor"),
    );

    // change a recorded value and recompute the chain, as anyone who can write the file can
    let log = profiles.path().join("audit.jsonl");
    let at = std::fs::read_to_string(&log)
        .expect("audit")
        .lines()
        .position(|l| l.contains("\"hi\""))
        .expect("a record with the message")
        + 1;
    forge(&log, at, |l| l.replace("\"hi\"", "\"bye\""));
    // the store's head no longer matches the last record
    let caught = verify(None);
    assert_eq!(caught.status.code(), Some(1));
    let text = String::from_utf8_lossy(&caught.stdout);
    assert!(
        text.contains("is not the one the store kept as the head"),
        "{text}"
    );
    // unless the store is rewritten too
    let last = std::fs::read_to_string(&log).expect("audit");
    let last: serde_json::Value =
        serde_json::from_str(last.lines().last().expect("a record")).expect("json");
    let st = Std::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('UPDATE audit_head SET hash = ?', (sys.argv[2],)); c.commit()",
        ])
        .arg(profiles.path().join("store.sqlite3"))
        .arg(last["hash"].as_str().expect("hash"))
        .status()
        .expect("python3");
    assert!(st.success());
    let without = verify(None);
    assert_eq!(without.status.code(), Some(0), "the plain chain holds");
    let text = String::from_utf8_lossy(&without.stdout);
    assert!(
        text.contains("carry a `mac`; they were not checked"),
        "{text}"
    );
    let with = verify(Some(KEY));
    assert_eq!(with.status.code(), Some(1));
    let text = String::from_utf8_lossy(&with.stdout);
    assert!(text.contains(&format!("BROKEN at line {at}")), "{text}");
    assert!(text.contains("`mac` does not match"), "{text}");
    outputs.push(with);

    for out in &outputs {
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                !String::from_utf8_lossy(stream).contains(KEY),
                "the key was shown"
            );
        }
    }
    assert_eq!(
        crate::files_containing(profiles.path(), &[KEY]),
        Vec::<String>::new()
    );
}

#[test]
fn artifact_reads_refuse_paths_outside_the_runs() {
    let profiles = tempfile::tempdir().expect("profiles");
    std::fs::create_dir_all(profiles.path().join("runs")).expect("runs");
    for bad in [
        "artifact://runs/../audit.jsonl",
        "artifact:///etc/passwd",
        "/etc/passwd",
    ] {
        let out = crate::infra_in(profiles.path(), profiles.path())
            .args(["artifacts", "get", bad])
            .output()
            .expect("get");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(out.stdout.is_empty(), "{bad}");
    }
}

#[test]
fn artifact_reads_follow_no_link_below_the_root() {
    let profiles = tempfile::tempdir().expect("profiles");
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("stdout"), "CANARY\n").expect("write");
    let step = profiles.path().join("runs/rb/r1/s");
    std::fs::create_dir_all(&step).expect("runs");
    std::fs::write(step.join("stdout"), "real\n").expect("write");
    let link = |to: &Path, at: &Path| std::os::unix::fs::symlink(to, at).expect("symlink");
    link(&step.join("stdout"), &step.join("alias"));
    link(
        &profiles.path().join("runs/rb/r1"),
        &profiles.path().join("runs/rb/r2"),
    );
    link(outside.path(), &profiles.path().join("runs/rb/out"));
    let get = |how: &str, uri: &str| {
        crate::infra_in(profiles.path(), profiles.path())
            .args(["artifacts", how, uri])
            .output()
            .expect("artifacts")
    };
    let plain = get("get", "artifact://runs/rb/r1/s/stdout");
    assert_eq!(plain.status.code(), Some(0));
    assert_eq!(plain.stdout, b"real\n");
    for uri in [
        "artifact://runs/rb/r1/s/alias",
        "artifact://runs/rb/r2/s/stdout",
        "artifact://runs/rb/out/stdout",
    ] {
        for how in ["get", "tail"] {
            let out = get(how, uri);
            assert_eq!(out.status.code(), Some(2), "{how} {uri}");
            assert!(out.stdout.is_empty(), "{how} {uri}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("symbolic link"), "{how} {uri}: {err}");
        }
    }
}

#[test]
fn kill_9_mid_run_leaves_a_verifiable_journal_and_audit() {
    let profiles = tempfile::tempdir().expect("profiles");
    let pidfile = profiles.path().join("child.pid");
    let rb = profiles.path().join("slow.yaml");
    std::fs::write(
        &rb,
        format!(
            "name: slow\nsteps:\n  - {{id: first, tool: state, args: {{action: set, key: a, value: 1}}}}\n  - {{id: wait, tool: local, args: {{action: exec, command: 'echo $$ > {}; exec sleep 30'}}}}\n",
            pidfile.display()
        ),
    )
    .expect("write");
    let mut child = Std::new(assert_cmd::cargo::cargo_bin("infra"))
        .env_clear()
        .env("MCP_PROFILES_DIR", profiles.path())
        .env("INFRA_UNSAFE_LOCAL", "1")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("run")
        .arg(&rb)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let sleeper = crate::pid_written(&pidfile, 20);
    child.kill().expect("kill -9");
    let _ = child.wait();
    // the sleeping command was in its own process group; stop it too
    if !sleeper.is_empty() {
        let _ = Std::new("kill").args(["-9", &sleeper]).status();
    }
    assert!(!sleeper.is_empty(), "the step never started");
    let verify = crate::infra_in(profiles.path(), profiles.path())
        .args(["audit", "verify"])
        .output()
        .expect("verify");
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let runs = crate::infra_in(profiles.path(), profiles.path())
        .args(["runs", "list", "--json"])
        .output()
        .expect("runs");
    let id = stdout_json(&runs)[0]["run_id"]
        .as_str()
        .expect("run_id")
        .to_owned();
    let show = crate::infra_in(profiles.path(), profiles.path())
        .args(["runs", "show", &id])
        .output()
        .expect("show");
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("interrupted"), "{text}");
    assert!(text.contains("wait attempt 1 started"), "{text}");
}

#[test]
fn ctrl_c_stops_a_run_and_exits_130() {
    let p = crate::project::Project::new().unsafe_local();
    let pidfile = p.path().join("child.pid");
    let p = p.file(
        "slow.yaml",
        &format!(
            "name: slow\nsteps:\n  - {{id: wait, tool: local, args: {{action: exec, command: 'echo $$ > {}; exec sleep 30'}}}}\n",
            pidfile.display()
        ),
    );
    let mut child = p
        .command()
        .arg("run")
        .arg(p.path().join("slow.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(
        !crate::pid_written(&pidfile, 20).is_empty(),
        "the step started"
    );
    let st = Std::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{status:?}");
    let sleeper = std::fs::read_to_string(&pidfile).expect("pid");
    assert!(
        !crate::alive(sleeper.trim()),
        "the step's process was stopped"
    );
}

#[test]
fn no_command_and_a_stdin_that_is_not_json_rpc_is_a_usage_error() {
    let p = crate::project::Project::new();
    let out = p.infra().write_stdin("list\n").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no MCP server answered");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("infra mcp"), "{err}");
    // a JSON-RPC client is served, blank lines before its first message or not
    let out = p
        .infra()
        .write_stdin(
            "\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}}\n",
        )
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let first = String::from_utf8_lossy(&out.stdout);
    assert!(
        first.contains("\"id\":1") && first.contains("serverInfo"),
        "{first}"
    );
}

#[test]
fn runs_show_prints_the_outputs_and_lower_case_statuses() {
    let p = crate::project::Project::new().runbook(
        "greet",
        "inputs: [who]\nsteps:\n  - {id: s, tool: state, args: {action: set, key: g, value: 'hello {{ input.who }}'}}\noutputs:\n  said: '{{ steps.s.value }}'\n",
    );
    let out = p
        .infra()
        .args(["run", "greet", "--json", "--input", "who=world"])
        .output()
        .expect("run");
    let id = stdout_json(&out)["run_id"].as_str().expect("id").to_owned();
    let show = p
        .infra()
        .args(["runs", "show", &id])
        .output()
        .expect("show");
    assert_eq!(show.status.code(), Some(0));
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("outputs:\n  said: \"hello world\""), "{text}");
    assert!(text.contains("s succeeded in"), "{text}");
    assert!(text.contains("finished succeeded in"), "{text}");
}

#[test]
fn a_value_a_runbook_sets_is_what_the_cli_reads_and_a_missing_one_exits_1() {
    let p = crate::project::Project::new();
    let run = p
        .infra()
        .args(["run", "hello.world", "--input", "message=hi"])
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(0));
    let got = p
        .infra()
        .args(["state", "get", "hello"])
        .output()
        .expect("get");
    assert_eq!(got.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "hi\n",
        "a string as it is"
    );
    // the CLI's call is a run named after what it did
    let runs = p
        .infra()
        .args(["runs", "list", "--json"])
        .output()
        .expect("runs");
    assert!(
        stdout_json(&runs)
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["runbook"] == "state.get")),
        "{}",
        String::from_utf8_lossy(&runs.stdout)
    );
    let gone = p
        .infra()
        .args(["state", "unset", "hello"])
        .output()
        .expect("unset");
    assert_eq!(gone.status.code(), Some(0));
    let missing = p
        .infra()
        .args(["state", "get", "hello"])
        .output()
        .expect("get");
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no value `hello`"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// Runs `argv` with a pseudo-terminal as its controlling terminal (Python's `os.forkpty`), as a person
/// at a terminal would; gives its exit code and what it printed, or `None` if it ran past `secs`. The
/// terminal's end (EOF) can come before the process can be waited for: the wait has the same bound.
fn under_a_terminal(argv: &[String], env: &[(&str, String)], secs: u64) -> Option<(i32, String)> {
    let script = "import os, sys, time, select, signal\n\
pid, fd = os.forkpty()\n\
if pid == 0:\n    os.execv(sys.argv[2], sys.argv[2:])\n\
end = time.time() + float(sys.argv[1]); out = b''\n\
while time.time() < end:\n    r, _, _ = select.select([fd], [], [], 0.1)\n    if r:\n        try:\n            b = os.read(fd, 65536)\n        except OSError:\n            b = b''\n        out += b\n        if not b:\n            break\n\
done = 0\n\
while done == 0 and time.time() < end:\n    done, status = os.waitpid(pid, os.WNOHANG)\n    if done == 0:\n        time.sleep(0.02)\n\
if done == 0:\n    os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)\n    sys.stdout.buffer.write(out); sys.exit(99)\n\
sys.stdout.buffer.write(out); sys.exit(os.waitstatus_to_exitcode(status))\n";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(secs.to_string())
        .args(argv)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(99) => None,
        Some(c) => Some((c, text)),
        None => None,
    }
}

#[test]
fn a_step_that_waits_on_the_terminal_fails_with_what_it_waited_for_instead_of_hanging() {
    let profiles = tempfile::tempdir().expect("profiles");
    let rb = profiles.path().join("t.yaml");
    // reading the terminal from a process group that is not its foreground stops the reader
    std::fs::write(
        &rb,
        "name: t\nsteps:\n  - {id: ask, tool: local, args: {action: exec, command: 'read answer < /dev/tty; echo got $answer'}}\n",
    )
    .expect("write");
    let bin = assert_cmd::cargo::cargo_bin("infra").display().to_string();
    let env = [
        ("MCP_PROFILES_DIR", profiles.path().display().to_string()),
        ("INFRA_UNSAFE_LOCAL", "1".to_owned()),
        ("NO_COLOR", "1".to_owned()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ];
    let ran = under_a_terminal(&[bin, "run".into(), rb.display().to_string()], &env, 30);
    let (code, shown) = ran.expect("infra run ended by itself");
    assert_eq!(code, 1, "{shown}");
    assert!(
        shown.contains("stopped waiting for the terminal"),
        "{shown}"
    );
    assert!(
        shown.contains("sh"),
        "the stopped command is named: {shown}"
    );
}
