//! SSH safety: hostile inputs arrive as one argument, credentials and secrets never show, env values
//! never reach a command line, and a process that leaves its group is found and killed.

use super::*;

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
