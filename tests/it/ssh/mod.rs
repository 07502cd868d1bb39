//! `ssh` against a real OpenSSH server on loopback (tests/support/sshd.rs): exec, stdin, env, cwd, large
//! output, timeouts and cancels that kill the remote process group, batch, SFTP, host key policies,
//! authentication failures, connection reuse, jump hosts and injection safety. This file holds the
//! helpers and the command and transfer tests; `connections` host keys, authentication, reuse, jump
//! hosts and dead sessions; `safety` hostile inputs, secrets and processes that escape.

mod connections;
mod safety;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::ctx::{Config, Vars};
use engine::run::{CancelToken, Engine, RunOptions, StepOutcome};
use serde_json::{Value, json};

use crate::support::sshd::Sshd;

/// A target entry for the server, logging in with its client key and checking its known_hosts.
pub fn target(s: &Sshd) -> Value {
    json!({
        "host": "127.0.0.1",
        "port": s.port,
        "username": s.user,
        "key_file": s.key,
        "known_hosts": s.known_hosts,
    })
}

/// An engine whose profiles directory holds `targets`.
pub fn engine_with(dir: &Path, targets: &Value, unsafe_local: bool) -> Engine {
    std::fs::write(
        dir.join("targets.json"),
        serde_json::to_string_pretty(targets).expect("json"),
    )
    .expect("write targets");
    let mut c = Config::at(dir).with_vars(Vars::from_pairs([(
        "HOME",
        dir.join("home").display().to_string(),
    )]));
    c.unsafe_local = unsafe_local;
    Engine::new(c, Arc::new(engine::Catalog::builtin()))
}

/// One `ssh` call through the engine, as a one-node plan.
pub fn call(e: &Engine, args: Value) -> StepOutcome {
    call_with(e, args, &CancelToken::new())
}

fn call_with(e: &Engine, args: Value, cancel: &CancelToken) -> StepOutcome {
    crate::call_tool(e, "ssh", args, cancel)
}

fn ok(s: &StepOutcome) -> &Value {
    assert!(s.error.is_none(), "{:?}", s.error);
    s.result.as_ref().expect("a result")
}

fn err_kind(s: &StepOutcome) -> &str {
    s.error
        .as_ref()
        .map(|e| e.kind.as_str())
        .unwrap_or_else(|| panic!("expected an error, got {:?}", s.result))
}

/// Whether a local pid is gone (or a zombie: killed, waiting to be reaped).
fn dead(pid: &str) -> bool {
    !crate::alive(pid)
}

fn wait_for(path: &Path) {
    let until = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_exit_codes_env_cwd_and_stdin() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_with(dir.path(), &json!({"box": target(&s)}), false);

    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "echo ok"}),
    );
    let v = ok(&r);
    assert_eq!(v["stdout"], "ok\n", "{v}");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["stdout_bytes"], 3);
    assert_eq!(v["target"], "box");

    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "echo bad >&2; exit 7"}),
    );
    assert_eq!(err_kind(&r), "nonzero_exit");
    let v = r
        .error
        .as_ref()
        .and_then(|e| e.result.clone())
        .expect("result");
    assert_eq!(v["exit_code"], 7);
    assert_eq!(v["stderr"], "bad\n");
    // a status the call accepts is a success, and still reported
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "exit 7", "ok_exit_codes": [0, 7]}),
    );
    assert_eq!(ok(&r)["exit_code"], 7);
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "true", "ok_exit_codes": [1]}),
    );
    assert_eq!(err_kind(&r), "nonzero_exit", "only the listed codes count");

    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "printf '%s|' \"$A\" \"$B\"; pwd", "env": {"A": "x y", "B": "$(id)"}, "cwd": dir.path()}),
    );
    assert_eq!(
        ok(&r)["stdout"],
        format!("x y|$(id)|{}\n", dir.path().display())
    );

    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "cat", "stdin": "line one\nline two"}),
    );
    assert_eq!(ok(&r)["stdout"], "line one\nline two");
    let uri = ok(&r)["stdout_uri"].as_str().expect("uri").to_owned();

    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "wc -c", "stdin_base64": "AAEC/w=="}),
    );
    assert_eq!(ok(&r)["stdout"].as_str().map(str::trim), Some("4"));

    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "tr a-z A-Z", "stdin_ref": uri}),
    );
    assert_eq!(ok(&r)["stdout"], "LINE ONE\nLINE TWO");

    // without stdin the command reads end of file at once
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "cat; echo done"}),
    );
    assert_eq!(ok(&r)["stdout"], "done\n");

    // argv: each element one word
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "argv": ["printf", "[%s]", "a b", "*", "$HOME"]}),
    );
    assert_eq!(ok(&r)["stdout"], "[a b][*][$HOME]");

    // no terminal unless asked for
    let tty = |pty: bool| {
        call(
            &e,
            json!({"action": "exec", "target": "box", "command": "if [ -t 0 ]; then echo tty; else echo none; fi", "pty": pty}),
        )
    };
    assert_eq!(ok(&tty(false))["stdout"], "none\n");
    assert_eq!(
        ok(&tty(true))["stdout"].as_str().map(str::trim),
        Some("tty")
    );
}

#[test]
fn stdin_file_needs_the_local_opt_in() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("input.txt");
    std::fs::write(&file, "from a host file").expect("write");
    let canary = dir.path().join("canary");
    let args = json!({"action": "exec", "target": "box", "command": format!("touch {}; cat", canary.display()), "stdin_file": file});

    let e = engine_with(dir.path(), &json!({"box": target(&s)}), false);
    let r = call(&e, args.clone());
    assert_eq!(err_kind(&r), "refused");
    let msg = &r.error.as_ref().expect("error").message;
    assert!(msg.contains("INFRA_UNSAFE_LOCAL=1"), "{msg}");
    assert!(!canary.exists(), "nothing ran");

    let e = engine_with(dir.path(), &json!({"box": target(&s)}), true);
    assert_eq!(ok(&call(&e, args))["stdout"], "from a host file");
}

#[test]
fn a_hundred_megabytes_of_output_stream_to_an_artifact() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_with(dir.path(), &json!({"box": target(&s)}), false);
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "head -c 100000000 /dev/zero | tr '\\0' x"}),
    );
    let v = ok(&r);
    assert_eq!(v["stdout_bytes"], 100_000_000);
    assert_eq!(v["stdout_truncated"], true);
    assert_eq!(v["stdout"].as_str().map(str::len), Some(1024 * 1024));
    let expect = std::process::Command::new("sh")
        .args(["-c", "head -c 100000000 /dev/zero | tr '\\0' x | sha256sum"])
        .output()
        .expect("sha256sum");
    let expect = String::from_utf8_lossy(&expect.stdout);
    assert_eq!(
        v["stdout_sha256"].as_str(),
        expect.split_whitespace().next()
    );
    let uri = v["stdout_uri"].as_str().expect("uri");
    let file = crate::open_artifact(dir.path(), uri);
    assert_eq!(file.metadata().expect("artifact").len(), 100_000_000);
}

#[test]
fn a_timeout_kills_the_remote_process_group() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_with(dir.path(), &json!({"box": target(&s)}), false);
    let d = dir.path().display();
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "timeout_ms": 1500,
               "command": format!("sleep 1000 & echo $! > {d}/bg.pid; sleep 1000 & echo $! > {d}/fg.pid; wait")}),
    );
    assert_eq!(err_kind(&r), "timeout");
    for f in ["bg.pid", "fg.pid"] {
        let pid = std::fs::read_to_string(dir.path().join(f)).expect("pid file");
        let until = Instant::now() + Duration::from_secs(5);
        while !dead(&pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(dead(&pid), "{f} {pid} still runs");
    }
    // the session is still good for the next call
    assert_eq!(
        ok(&call(
            &e,
            json!({"action": "exec", "target": "box", "command": "echo again"})
        ))["stdout"],
        "again\n"
    );
}

#[test]
fn a_cancel_kills_the_remote_process() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_with(dir.path(), &json!({"box": target(&s)}), false);
    let pidfile = dir.path().join("sleep.pid");
    let cancel = CancelToken::new();
    let r = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            call_with(
                &e,
                json!({"action": "exec", "target": "box",
                       "command": format!("sleep 1000 & echo $! > {}; wait", pidfile.display())}),
                &cancel,
            )
        });
        wait_for(&pidfile);
        cancel.cancel();
        h.join().expect("join")
    });
    assert_eq!(err_kind(&r), "cancelled");
    let pid = std::fs::read_to_string(&pidfile).expect("pid");
    let until = Instant::now() + Duration::from_secs(5);
    while !dead(&pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dead(&pid), "the remote sleep {pid} still runs");
}

#[test]
fn batch_runs_on_every_target_of_a_label_and_reports_each() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let t = |label: &str| {
        let mut v = target(&s);
        v["labels"] = json!([label]);
        v
    };
    let mut down = t("web");
    down["port"] = json!(crate::support::free_port());
    let targets = json!({"a": t("web"), "b": t("web"), "c": t("web"), "d": t("db"), "e": down});
    let e = engine_with(dir.path(), &targets, false);

    let r = call(
        &e,
        json!({"action": "batch", "targets": ["a", "b", "c"], "command": "echo $((20 + 22))", "parallel": 2}),
    );
    let v = ok(&r);
    assert_eq!(v["succeeded"], 3);
    let results = v["results"].as_array().expect("results");
    let names: Vec<&str> = results
        .iter()
        .filter_map(|r| r["target"].as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(results.iter().all(|r| r["stdout"] == "42\n"), "{v}");

    // by label: `e` is down, so the batch fails, with every other target's result
    let r = call(
        &e,
        json!({"action": "batch", "label": "web", "command": "hostname"}),
    );
    assert_eq!(err_kind(&r), "partial_failure");
    let v = r
        .error
        .as_ref()
        .and_then(|e| e.result.clone())
        .expect("result");
    assert_eq!(v["failed"], json!(["e"]));
    assert_eq!(v["succeeded"], 3);
    assert_eq!(v["results"][3]["error"]["kind"], "connect_failed");

    let r = call(
        &e,
        json!({"action": "batch", "label": "nope", "command": "true"}),
    );
    assert_eq!(err_kind(&r), "not_found");
}

#[test]
fn sftp_round_trip_keeps_every_byte() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_with(dir.path(), &json!({"box": target(&s)}), false);
    // three megabytes of random bytes, made remotely and kept as an artifact
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "head -c 3000000 /dev/urandom"}),
    );
    let made = ok(&r).clone();
    let remote = dir.path().join("remote/copy.bin");
    std::fs::create_dir_all(remote.parent().expect("parent")).expect("mkdir");
    std::fs::write(&remote, "old content").expect("old");
    let r = call(
        &e,
        json!({"action": "upload", "target": "box", "remote_path": remote, "artifact": made["stdout_uri"]}),
    );
    let up = ok(&r);
    assert_eq!(up["bytes"], 3_000_000);
    assert_eq!(up["sha256"], made["stdout_sha256"]);
    let on_disk = std::process::Command::new("sha256sum")
        .arg(&remote)
        .output()
        .expect("sha256sum");
    assert_eq!(
        String::from_utf8_lossy(&on_disk.stdout)
            .split_whitespace()
            .next(),
        made["stdout_sha256"].as_str()
    );
    let leftovers: Vec<_> = std::fs::read_dir(remote.parent().expect("parent"))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file is left: {leftovers:?}"
    );

    let r = call(
        &e,
        json!({"action": "download", "target": "box", "remote_path": remote}),
    );
    let down = ok(&r);
    assert_eq!(down["bytes"], 3_000_000);
    assert_eq!(down["sha256"], made["stdout_sha256"]);

    let r = call(
        &e,
        json!({"action": "download", "target": "box", "remote_path": dir.path().join("missing")}),
    );
    assert_eq!(err_kind(&r), "not_found");

    // text content with a mode; a size cap on downloads
    let secret_file = dir.path().join("remote/conf");
    let r = call(
        &e,
        json!({"action": "upload", "target": "box", "remote_path": secret_file, "content": "k=v\n", "mode": 0o600}),
    );
    assert_eq!(ok(&r)["bytes"], 4);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .expect("uploaded")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let r = call(
        &e,
        json!({"action": "download", "target": "box", "remote_path": remote, "max_bytes": 1000}),
    );
    assert_eq!(err_kind(&r), "too_large");
    let runs = dir.path().join("runs/ssh.download");
    let partial = crate::files_under(&runs)
        .into_iter()
        .filter(|f| f.ends_with("/copy.bin"))
        .count();
    assert_eq!(
        partial, 1,
        "only the whole download of before is kept, not the refused one"
    );

    // host paths need the opt-in
    let local = dir.path().join("local.bin");
    let r = call(
        &e,
        json!({"action": "download", "target": "box", "remote_path": remote, "local_path": local}),
    );
    assert_eq!(err_kind(&r), "refused");
    assert!(!local.exists());
    let e = engine_with(dir.path(), &json!({"box": target(&s)}), true);
    let r = call(
        &e,
        json!({"action": "download", "target": "box", "remote_path": remote, "local_path": local}),
    );
    assert_eq!(ok(&r)["sha256"], made["stdout_sha256"]);
    assert_eq!(std::fs::metadata(&local).expect("local").len(), 3_000_000);
}

#[test]
fn a_step_reads_its_target_without_credentials() {
    let s = Sshd::start();
    let p = crate::project::Project::new()
        .targets(&json!({"box": target(&s)}))
        .file(
            "who.yaml",
            "name: who\ninputs: [t]\nsteps:\n  - {id: say, tool: ssh, args: {action: exec, target: '{{ input.t }}', command: 'echo {{ target.name }}:{{ target.port }}:{{ target.username }}'}}\noutputs:\n  said: '{{ steps.say.stdout }}'\n",
        );
    let out = p
        .infra()
        .args(["run", "who.yaml", "--json", "--input", "t=box"])
        .output()
        .expect("run");
    let v = crate::stdout_json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(
        v["outputs"]["said"],
        format!("box:{}:{}\n", s.port, s.user),
        "{v}"
    );
    let text = v.to_string();
    assert!(
        !text.contains(&s.key.display().to_string()),
        "no key path: {text}"
    );
    // a step with no target has none: validate says so, as the run would
    let bad = p.file(
        "none.yaml",
        "name: none\nsteps:\n  - {id: a, tool: state, args: {action: set, key: k, value: '{{ target.name }}'}}\n",
    );
    let out = bad
        .infra()
        .args(["validate", "none.yaml"])
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("undefined-variable")
            && err.contains("`target` exists only in a step with a `target` argument"),
        "{err}"
    );
}
