//! `ssh` against a real OpenSSH server on loopback (tests/support/sshd.rs): exec, stdin, env, cwd, large
//! output, timeouts and cancels that kill the remote process group, batch, SFTP, host key policies,
//! authentication failures, connection reuse, jump hosts and injection safety.

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
    let runs = dir.path().join("runs/call");
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

/// The `sshd` log lines that accepted a login.
fn logins(s: &Sshd) -> usize {
    s.log().matches("Accepted publickey").count()
}

#[test]
fn host_keys_strict_accept_new_and_pinned() {
    let mut s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let canary = dir.path().join("canary");
    let touch = json!({"action": "exec", "target": "box", "command": format!("touch {}", canary.display())});

    // strict (the default) with a known_hosts that lacks the host: refused before authentication
    let empty = dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").expect("write");
    let mut t = target(&s);
    t["known_hosts"] = json!(empty);
    let e = engine_with(dir.path(), &json!({"box": t}), false);
    let r = call(&e, touch.clone());
    assert_eq!(err_kind(&r), "host_key_unknown");
    let err = r.error.as_ref().expect("error");
    assert!(
        err.message.contains(&s.host_fingerprint()),
        "{}",
        err.message
    );
    assert!(
        err.hint
            .as_deref()
            .unwrap_or_default()
            .contains("ssh-keyscan")
    );
    assert!(!canary.exists(), "no command was sent");
    assert_eq!(logins(&s), 0, "no authentication was tried");

    // accept_new: the first key is recorded, a changed one is refused
    let tofu = dir.path().join("tofu_known_hosts");
    t["known_hosts"] = json!(tofu);
    t["host_key"] = json!("accept_new");
    let e = engine_with(dir.path(), &json!({"box": t}), false);
    assert_eq!(
        ok(&call(
            &e,
            json!({"action": "exec", "target": "box", "command": "echo first"})
        ))["stdout"],
        "first\n"
    );
    let recorded = std::fs::read_to_string(&tofu).expect("recorded");
    assert!(
        recorded.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", s.port)),
        "{recorded}"
    );
    s.new_host_key();
    let e = engine_with(dir.path(), &json!({"box": t}), false);
    let r = call(&e, touch.clone());
    assert_eq!(err_kind(&r), "host_key_changed");
    assert!(!canary.exists(), "no command was sent");
    assert_eq!(std::fs::read_to_string(&tofu).expect("kept"), recorded);

    // pinned
    let mut pinned = target(&s);
    pinned["fingerprint"] = json!(s.host_fingerprint());
    pinned["known_hosts"] = json!(empty);
    let mut wrong = pinned.clone();
    wrong["fingerprint"] = json!("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let e = engine_with(
        dir.path(),
        &json!({"pinned": pinned, "wrong": wrong}),
        false,
    );
    assert_eq!(
        ok(&call(
            &e,
            json!({"action": "exec", "target": "pinned", "command": "echo pinned"})
        ))["stdout"],
        "pinned\n"
    );
    let r = call(
        &e,
        json!({"action": "exec", "target": "wrong", "command": format!("touch {}", canary.display())}),
    );
    assert_eq!(err_kind(&r), "host_key_mismatch");
    assert!(!canary.exists());
}

#[test]
fn wrong_key_refused_port_and_unknown_target_are_clear_errors() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let mut wrong = target(&s);
    wrong["key_file"] = json!(s.wrong_key);
    let mut closed = target(&s);
    closed["port"] = json!(crate::support::free_port());
    let mut nokey = target(&s);
    nokey["key_file"] = json!(dir.path().join("nope"));
    let mut pw = target(&s);
    pw.as_object_mut().expect("obj").remove("key_file");
    pw["password_env"] = json!("BOX_PASSWORD");
    let e = engine_with(
        dir.path(),
        &json!({"wrong": wrong, "closed": closed, "nokey": nokey, "pw": pw}),
        false,
    );
    let exec = |t: &str| json!({"action": "exec", "target": t, "command": "true"});
    let r = call(&e, exec("wrong"));
    assert_eq!(err_kind(&r), "auth_failed");
    assert!(
        !r.error
            .as_ref()
            .expect("e")
            .message
            .contains(&*s.wrong_key.to_string_lossy())
    );
    assert_eq!(err_kind(&call(&e, exec("closed"))), "connect_failed");
    assert_eq!(err_kind(&call(&e, exec("nokey"))), "invalid_config");
    let r = call(&e, exec("pw"));
    assert_eq!(err_kind(&r), "invalid_config");
    assert!(
        r.error
            .as_ref()
            .expect("e")
            .message
            .contains("BOX_PASSWORD")
    );
    let r = call(&e, exec("wrnog"));
    assert_eq!(err_kind(&r), "not_found");
    assert_eq!(
        r.error.as_ref().and_then(|e| e.hint.as_deref()),
        Some("did you mean `wrong`?")
    );
}

#[test]
fn one_session_serves_many_calls_and_a_dead_one_is_replaced() {
    let mut s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_with(dir.path(), &json!({"box": target(&s)}), false);
    for i in 0..5 {
        let r = call(
            &e,
            json!({"action": "exec", "target": "box", "command": format!("echo {i}")}),
        );
        assert_eq!(ok(&r)["stdout"], format!("{i}\n"));
    }
    // parallel channels on the same session
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..6)
            .map(|i| {
                let e = &e;
                sc.spawn(move || {
                    call(
                        e,
                        json!({"action": "exec", "target": "box", "command": format!("sleep 0.3; echo {i}")}),
                    )
                })
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            let r = h.join().expect("join");
            assert!(r.error.is_none(), "{:?}\n{}", r.error, s.log());
            assert_eq!(ok(&r)["stdout"], format!("{i}\n"));
        }
    });
    assert_eq!(logins(&s), 1, "one login for every call:\n{}", s.log());

    s.restart();
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "echo back"}),
    );
    assert_eq!(ok(&r)["stdout"], "back\n");
    assert_eq!(logins(&s), 2);
}

#[test]
fn a_target_behind_a_bastion() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let mut inner = target(&s);
    inner["jump"] = json!("bastion");
    let e = engine_with(
        dir.path(),
        &json!({"bastion": target(&s), "inner": inner}),
        false,
    );
    let r = call(
        &e,
        json!({"action": "exec", "target": "inner", "command": "echo through; echo $SSH_CONNECTION"}),
    );
    let out = ok(&r)["stdout"].as_str().expect("stdout").to_owned();
    assert!(out.starts_with("through\n"), "{out}");
    assert_eq!(
        logins(&s),
        2,
        "the bastion and the inner target each log in"
    );
    let r = call(&e, json!({"action": "health", "target": "inner"}));
    assert_eq!(ok(&r)["host_key_fingerprint"], s.host_fingerprint());
}

#[test]
fn health_and_info() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_with(dir.path(), &json!({"box": target(&s)}), false);
    let r = call(&e, json!({"action": "health", "target": "box"}));
    let v = ok(&r);
    assert_eq!(v["ok"], true);
    assert_eq!(v["host_key_fingerprint"], s.host_fingerprint());
    assert_eq!(v["host_key_type"], "ssh-ed25519");
    assert!(v["latency_ms"].is_u64() && v["connect_ms"].is_u64());

    let r = call(&e, json!({"action": "info", "target": "box"}));
    let v = ok(&r);
    let uname = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .expect("uname");
    assert!(
        v["kernel"]
            .as_str()
            .is_some_and(|k| k.ends_with(String::from_utf8_lossy(&uname.stdout).trim())),
        "{v}"
    );
    assert!(
        v["memory"]["total_kib"].as_u64().is_some_and(|m| m > 0),
        "{v}"
    );
    assert!(v["disk"]["size_kib"].as_u64().is_some_and(|m| m > 0), "{v}");
    assert_eq!(v["load"].as_array().map(Vec::len), Some(3));
}

/// Values an attacker would put in an input, each to arrive as exactly one argument.
const HOSTILE: &[&str] = &[
    "; touch CANARY",
    "$(touch CANARY)",
    "`touch CANARY`",
    "a\nb; touch CANARY",
    "it's \"quoted\"",
    "'; touch CANARY; echo '",
    "-rf",
    "--help",
    "*",
    "/*",
    "{a,b}",
    "a\u{a0}b",
    "$HOME ${PATH}",
    "| touch CANARY",
    "&& touch CANARY &",
    "> CANARY",
    "\\",
    " leading and trailing ",
    "",
    "\ttab",
];

#[test]
fn hostile_inputs_arrive_as_one_argument_byte_for_byte() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let profiles = dir.path().join("profiles");
    let work = dir.path().join("work");
    std::fs::create_dir_all(profiles.join("runbooks")).expect("mkdir");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(
        profiles.join("targets.json"),
        json!({"box": target(&s)}).to_string(),
    )
    .expect("targets");
    // records its argument count and each argument, byte for byte
    let dump = work.join("argdump");
    std::fs::write(
        &dump,
        "#!/bin/sh\nprintf '%s' \"$#\" > \"$OUT.n\"\nprintf '%s' \"$1\" > \"$OUT\"\n",
    )
    .expect("script");
    std::process::Command::new("chmod")
        .args(["+x", &dump.to_string_lossy()])
        .status()
        .expect("chmod");
    std::fs::write(
        profiles.join("runbooks/inject.yaml"),
        "name: inject\ninputs:\n  values: {type: array}\n  dump: {type: string}\n  work: {type: string}\nflow: dag\nmax_parallel: 4\nsteps:\n  - id: shell\n    tool: ssh\n    foreach: '{{ input.values }}'\n    args:\n      action: exec\n      target: box\n      cwd: '{{ input.work }}'\n      env: {OUT: 'shell-{{ index }}'}\n      command: '{{ input.dump }} {{ item }}'\n  - id: argv\n    tool: ssh\n    foreach: '{{ input.values }}'\n    args:\n      action: exec\n      target: box\n      cwd: '{{ input.work }}'\n      env: {OUT: 'argv-{{ index }}'}\n      argv: ['{{ input.dump }}', '{{ item }}']\n",
    )
    .expect("runbook");
    let inputs = dir.path().join("inputs.json");
    std::fs::write(
        &inputs,
        json!({"values": HOSTILE, "dump": dump, "work": work}).to_string(),
    )
    .expect("inputs");
    let out = crate::infra_in(&profiles, dir.path())
        .args(["run", "inject", "--json", "--input-file"])
        .arg(&inputs)
        .output()
        .expect("infra run");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, v) in HOSTILE.iter().enumerate() {
        for how in ["shell", "argv"] {
            let n = std::fs::read_to_string(work.join(format!("{how}-{i}.n"))).expect("count");
            assert_eq!(n, "1", "{how}: {v:?} arrived as {n} arguments");
            let got = std::fs::read(work.join(format!("{how}-{i}"))).expect("arg");
            assert_eq!(got, v.as_bytes(), "{how}: {v:?} changed on the way");
        }
    }
    let stray: Vec<_> = std::fs::read_dir(&work)
        .expect("ls")
        .chain(std::fs::read_dir(dir.path()).expect("ls"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("CANARY") || n == "a" || n == "b")
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    assert!(!Path::new("CANARY").exists());
}

#[test]
fn the_built_in_ssh_runbooks_run() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("targets.json"),
        json!({"box": target(&s)}).to_string(),
    )
    .expect("targets");
    let run = |name: &str, extra: &[&str]| {
        let out = crate::infra_in(dir.path(), dir.path())
            .args(["run", name, "--json", "--input", "target=box"])
            .args(extra)
            .output()
            .expect("infra run");
        (out.status.code(), crate::stdout_json(&out))
    };
    let (code, v) = run("ssh.health", &[]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["outputs"]["host_key_fingerprint"], s.host_fingerprint());
    let (code, v) = run("ssh.system_info", &[]);
    assert_eq!(code, Some(0), "{v}");
    assert!(v["outputs"]["info"]["kernel"].is_string(), "{v}");
    let (code, v) = run("preflight.ssh", &[]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["outputs"]["ok"], true, "{v}");
    let (code, v) = run("preflight.ssh", &["--input", "min_free_kib=999999999999"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["outputs"]["ok"], false, "{v}");

    // the service name is typed: a hostile one is refused before anything runs
    let out = crate::infra_in(dir.path(), dir.path())
        .args([
            "run",
            "vps.service.restart",
            "--input",
            "target=box",
            "--input",
            "service=nginx; reboot",
        ])
        .output()
        .expect("infra run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("service"));
    let out = crate::infra_in(dir.path(), dir.path())
        .args([
            "plan",
            "vps.service.restart",
            "--json",
            "--input",
            "target=box",
            "--input",
            "service=nginx",
        ])
        .output()
        .expect("infra plan");
    let plan = crate::stdout_json(&out);
    assert!(
        plan.to_string().contains("sudo systemctl restart 'nginx'"),
        "{plan}"
    );
}

#[test]
fn credentials_and_secret_inputs_never_show() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    // a passphrase-protected key, authorized on the server
    let key = dir.path().join("locked_key");
    let passphrase = "correct horse battery staple 7f3a";
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    let authorized = s.dir.path().join("authorized_keys");
    let mut all = std::fs::read_to_string(&authorized).expect("authorized_keys");
    all.push_str(&public);
    std::fs::write(&authorized, all).expect("authorize");

    let mut t = target(&s);
    t["key_file"] = json!(key);
    t["passphrase_env"] = json!("LOCKED_PASSPHRASE");
    std::fs::write(
        dir.path().join("targets.json"),
        json!({"locked": t}).to_string(),
    )
    .expect("targets");
    let c = Config::at(dir.path()).with_vars(Vars::from_pairs([("LOCKED_PASSPHRASE", passphrase)]));
    let e = Engine::new(c, Arc::new(engine::Catalog::builtin()));
    // connecting reads the passphrase, and from then on it is masked everywhere: here a command given it
    // (in its arguments, in the audit log and the journal) and printing it
    ok(&call(
        &e,
        json!({"action": "exec", "target": "locked", "command": "true"}),
    ));
    let r = call(
        &e,
        json!({"action": "exec", "target": "locked", "command": "printf '%s\\n' \"$P\"", "env": {"P": passphrase}}),
    );
    let v = ok(&r);
    let shown = e.redactor().redact_value(v);
    assert_eq!(shown["stdout"], "[REDACTED]\n", "{shown}");

    // a secret input through a runbook: masked in results, artifacts, evidence and audit
    let file = dsl::SourceFile::new(
        "secret.yaml",
        "name: secret\ninputs:\n  token: {type: string, secret: true}\nsteps:\n  - id: echo\n    tool: ssh\n    args: {action: exec, target: locked, command: 'echo {{ input.token }}; echo {{ input.token }} >&2'}\n",
    );
    let loaded = dsl::load(&file, None);
    let rb = Arc::new(loaded.runbooks.into_iter().next().expect("runbook"));
    let plan = engine::compile(rb.clone(), &engine::CompileOptions::default()).expect("compiles");
    let token = "tok-9d8e7f6a5b4c";
    let mut given = serde_json::Map::new();
    given.insert("token".into(), token.into());
    let inputs = dsl::resolve_inputs(&rb, &given).expect("inputs");
    let o = e.execute(&plan, inputs, &RunOptions::default());
    assert!(o.ok(), "{:?}", o.steps);
    let seen = crate::files_containing(dir.path(), &[token, passphrase]);
    assert!(seen.is_empty(), "a secret was written to {seen:?}");
}

#[test]
fn an_agent_holds_the_key() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    // the socket's file appears when it is bound, a moment before the agent listens: ask until it
    // answers
    let until = Instant::now() + Duration::from_secs(10);
    let added = loop {
        let out = std::process::Command::new("ssh-add")
            .arg(&s.key)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .expect("ssh-add");
        if out.status.success() || Instant::now() >= until {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut t = target(&s);
    t.as_object_mut().expect("obj").remove("key_file");
    t["agent"] = json!(true);
    std::fs::write(
        dir.path().join("targets.json"),
        json!({"box": t}).to_string(),
    )
    .expect("targets");
    let e = Engine::new(
        Config::at(dir.path()).with_vars(Vars::from_pairs([(
            "SSH_AUTH_SOCK",
            sock.display().to_string(),
        )])),
        Arc::new(engine::Catalog::builtin()),
    );
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "echo via agent"}),
    );
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(ok(&r)["stdout"], "via agent\n");
    // no agent: a clear error
    let e = Engine::new(Config::at(dir.path()), Arc::new(engine::Catalog::builtin()));
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "true"}),
    );
    assert_eq!(err_kind(&r), "auth_failed");
    assert!(
        r.error
            .as_ref()
            .is_some_and(|e| e.message.contains("SSH_AUTH_SOCK")),
        "{:?}",
        r.error
    );
}

/// A TCP relay whose open connections can go silent: they stay open but pass no more bytes, as after a
/// dropped NAT entry or with a hung host. Connections made later pass.
struct Relay {
    port: u16,
    /// Connections numbered below this are silent.
    silent_below: Arc<std::sync::atomic::AtomicUsize>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    fn to(port: u16) -> Relay {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let relay = Relay {
            port: listener.local_addr().expect("addr").port(),
            silent_below: Arc::new(AtomicUsize::new(0)),
            next: Arc::new(AtomicUsize::new(0)),
        };
        let (silent_below, next) = (relay.silent_below.clone(), relay.next.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let id = next.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let silent_below = silent_below.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || id < silent_below.load(Ordering::SeqCst) {
                                break;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        // silent: hold the connection open, pass nothing
                        while id < silent_below.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    });
                }
            }
        });
        relay
    }

    fn silence_open_connections(&self) {
        use std::sync::atomic::Ordering;
        self.silent_below
            .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

#[test]
fn a_session_that_goes_silent_is_replaced() {
    let s = Sshd::start();
    let relay = Relay::to(s.port);
    let dir = tempfile::tempdir().expect("tmp");
    let mut t = target(&s);
    t["port"] = json!(relay.port);
    t["fingerprint"] = json!(s.host_fingerprint());
    t["connect_timeout_ms"] = json!(1000);
    let e = engine_with(dir.path(), &json!({"box": t}), false);
    let exec = json!({"action": "exec", "target": "box", "command": "echo alive"});
    assert_eq!(ok(&call(&e, exec.clone()))["stdout"], "alive\n");
    relay.silence_open_connections();
    // the pooled session no longer answers: the call gives up on it and logs in afresh
    assert_eq!(ok(&call(&e, exec))["stdout"], "alive\n");
    assert_eq!(logins(&s), 2, "{}", s.log());
}

#[test]
fn max_sessions_bounds_the_commands_at_once() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let mut t = target(&s);
    t["max_sessions"] = json!(1);
    let e = engine_with(dir.path(), &json!({"box": t}), false);
    let d = dir.path().display().to_string();
    // each command records when it started and ended (ns); with one session at a time they never overlap
    std::thread::scope(|sc| {
        for i in 0..3 {
            let (e, d) = (&e, d.clone());
            sc.spawn(move || {
                let r = call(
                    e,
                    json!({"action": "exec", "target": "box",
                           "command": format!("date +%s%N > {d}/start-{i}; sleep 0.2; date +%s%N > {d}/end-{i}")}),
                );
                assert!(r.error.is_none(), "{:?}", r.error);
            });
        }
    });
    let read = |name: String| -> u128 {
        std::fs::read_to_string(dir.path().join(name))
            .expect("stamp")
            .trim()
            .parse()
            .expect("ns")
    };
    let mut spans: Vec<(u128, u128)> = (0..3)
        .map(|i| (read(format!("start-{i}")), read(format!("end-{i}"))))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "two commands ran at once: {spans:?}");
    }
}

/// Every `/proc/<pid>/cmdline` and `environ`-free view another user of the host has, searched for
/// `needle` until `stop` is set; returns how many times it was seen.
fn watch_cmdlines(needle: String, stop: Arc<std::sync::atomic::AtomicBool>) -> usize {
    let mut seen = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for p in dir.flatten() {
                if let Ok(c) = std::fs::read(p.path().join("cmdline"))
                    && String::from_utf8_lossy(&c).contains(&needle)
                {
                    seen += 1;
                }
            }
        }
    }
    seen
}

#[test]
fn env_values_travel_on_stdin_never_in_a_command_line() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_with(dir.path(), &json!({"box": target(&s)}), false);
    let canary = "envcanary-7f3e9d1c";
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let needle = canary.to_owned();
        std::thread::spawn(move || watch_cmdlines(needle, stop))
    };
    // values of every shape arrive byte for byte, and the command's own stdin follows them
    let values = [
        format!("{canary} plain"),
        "multi\nline\n\n".to_owned(),
        "quotes ' \" ` $(id) ${HOME} \\ %s %b \\0101 end".to_owned(),
        "ünïcødé ✓".to_owned(),
        String::new(),
        "-n".to_owned(),
    ];
    let mut env = serde_json::Map::new();
    let mut show = String::new();
    for (i, v) in values.iter().enumerate() {
        env.insert(format!("V{i}"), json!(v));
        show.push_str(&format!("printf '[%s]' \"$V{i}\"; "));
    }
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": format!("sleep 0.5; {show} cat"), "env": env, "stdin": "after the values"}),
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.join().expect("watcher");
    let want: String = values.iter().map(|v| format!("[{v}]")).collect();
    assert_eq!(ok(&r)["stdout"], format!("{want}after the values"));
    assert_eq!(seen, 0, "an env value stood in a process's command line");

    // a terminal would echo them back: refused
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "command": "true", "env": {"A": "b"}, "pty": true}),
    );
    assert_eq!(err_kind(&r), "invalid_args");
}

#[test]
fn a_remote_process_that_leaves_the_group_is_found_by_its_output_and_killed() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_with(dir.path(), &json!({"box": target(&s)}), false);
    let d = dir.path().display();
    let r = call(
        &e,
        json!({"action": "exec", "target": "box", "timeout_ms": 1000,
               "command": format!("setsid sh -c 'echo $$ > {d}/esc.pid; exec sleep 600' & sleep 600")}),
    );
    assert_eq!(err_kind(&r), "timeout");
    let pid = std::fs::read_to_string(dir.path().join("esc.pid")).expect("pid file");
    let e_ = r.error.as_ref().expect("error");
    assert!(
        e_.message.contains("left the command's process group"),
        "{}",
        e_.message
    );
    let result = e_.result.as_ref().expect("result");
    assert_eq!(
        result["escaped"][0]["pid"].to_string(),
        pid.trim(),
        "{result}"
    );
    let until = Instant::now() + Duration::from_secs(5);
    while !dead(&pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dead(&pid), "the escaped process {pid} still runs");
}
