//! SSH connections: host key policies, authentication (keys, passphrases, an agent), one session for
//! many calls, jump hosts, sessions that die or go silent, and `max_sessions`.

use super::*;

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

/// Many commands at once on one pooled session, ending and starting all the time beside two that
/// stream: every one arrives whole and the session survives (each channel's end goes over the same
/// connection as the others' data, so a channel freed outside the session's lock corrupts the
/// encrypted stream for all of them).
#[test]
fn many_commands_at_once_share_one_session_intact() {
    let s = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_with(dir.path(), &json!({"box": target(&s)}), false);
    const STREAMED: u64 = 64 << 20;
    std::thread::scope(|sc| {
        for _ in 0..2 {
            let e = &e;
            sc.spawn(move || {
                let r = call(
                    e,
                    json!({"action": "exec", "target": "box",
                           "command": format!("head -c {STREAMED} /dev/zero")}),
                );
                assert_eq!(ok(&r)["stdout_bytes"], STREAMED);
            });
        }
        for t in 0..6 {
            let e = &e;
            sc.spawn(move || {
                for i in 0..50 {
                    let r = call(
                        e,
                        json!({"action": "exec", "target": "box",
                               "command": format!("echo {t}-{i}; echo err-{t}-{i} >&2")}),
                    );
                    let v = ok(&r);
                    assert_eq!(v["stdout"], format!("{t}-{i}\n"), "{v}");
                    // (a login shell's own warnings may come first)
                    let err = v["stderr"].as_str().unwrap_or_default();
                    assert!(err.ends_with(&format!("err-{t}-{i}\n")), "{v}");
                }
            });
        }
    });
}
