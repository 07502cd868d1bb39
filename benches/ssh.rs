//! `ssh.exec echo ok` through the engine, 100 calls in sequence on one target, against the OpenSSH
//! client doing the same with a fresh connection per call and with ControlMaster multiplexing, all in
//! the same run against the same throwaway sshd on loopback. Run with `cargo bench --bench ssh`.
//!
//! Every infra call is a whole engine run: a one-node plan, its evidence journal and audit records.
//!
//! Each `exec` makes sshd start the user's shell, whose startup files cost the same for every client;
//! a second table times 100 SFTP reads of a small file (`internal-sftp`, no shell) to show the transport
//! alone: `ssh.download` against `sftp` with fresh connections and with ControlMaster.

#![allow(clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::ctx::Config;
use engine::run::{Engine, RunOptions};
use serde_json::json;
use support::sshd::Sshd;

const CALLS: usize = 100;

struct Figures {
    total: Duration,
    samples: Vec<Duration>,
}

impl Figures {
    fn median(&self) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        s[s.len() / 2]
    }
    fn p99(&self) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        s[(s.len() * 99 / 100).min(s.len() - 1)]
    }
}

fn measure(mut one: impl FnMut()) -> Figures {
    let mut samples = Vec::with_capacity(CALLS);
    let start = Instant::now();
    for _ in 0..CALLS {
        let t = Instant::now();
        one();
        samples.push(t.elapsed());
    }
    Figures {
        total: start.elapsed(),
        samples,
    }
}

fn openssh(args: &[String]) {
    let out = Command::new("ssh")
        .args(args)
        .arg("echo ok")
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    assert!(out.status.success() && out.stdout == b"ok\n", "{out:?}");
}

fn sftp_get(args: &[String], batch: &std::path::Path) {
    let out = Command::new("sftp")
        .arg("-q")
        .arg("-b")
        .arg(batch)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("sftp");
    assert!(out.status.success(), "{out:?}");
}

/// The `ssh` arguments, for `sftp` (`-P` for the port).
fn for_sftp(args: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| {
            if a == "-p" {
                "-P".to_owned()
            } else {
                a.clone()
            }
        })
        .collect()
}

fn table(title: &str, rows: &[(&str, &Figures)]) {
    println!("{title}\n");
    println!("| client | total | per call (median) | p99 |");
    println!("| --- | --- | --- | --- |");
    for (name, f) in rows {
        println!(
            "| {name} | {:.0} ms | {:.2} ms | {:.2} ms |",
            ms(f.total),
            ms(f.median()),
            ms(f.p99())
        );
    }
    let infra = rows[0].1;
    println!(
        "\ninfra against {}: {:.2}x as fast; against {}: {:.1}x as fast\n",
        rows[1].0,
        ms(rows[1].1.total) / ms(infra.total),
        rows[2].0,
        ms(rows[2].1.total) / ms(infra.total)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("targets.json"),
        json!({"box": {
            "host": "127.0.0.1", "port": sshd.port, "username": sshd.user,
            "key_file": sshd.key, "known_hosts": sshd.known_hosts,
        }})
        .to_string(),
    )
    .expect("targets");
    let engine = Engine::new(Config::at(dir.path()), Arc::new(engine::Catalog::builtin()));
    let args = json!({"action": "exec", "target": "box", "command": "echo ok"});
    let infra_call = || {
        let plan = engine::compile_call("ssh", &args, &engine::CompileOptions::default())
            .expect("compiles");
        let o = engine.execute(&plan, serde_json::Map::new(), &RunOptions::default());
        assert!(o.ok(), "{:?}", o.steps);
        assert_eq!(
            o.steps[0].result.as_ref().map(|r| r["stdout"].clone()),
            Some(json!("ok\n"))
        );
    };
    // the first call connects; it is part of the figure (one connection for the 100 calls)
    let infra = measure(infra_call);

    let base = sshd.openssh_args();
    let fresh = measure(|| openssh(&base));

    let sock = dir.path().join("cm.sock");
    let mut cm = vec![
        "-o".to_owned(),
        "ControlMaster=auto".to_owned(),
        "-o".to_owned(),
        format!("ControlPath={}", sock.display()),
        "-o".to_owned(),
        "ControlPersist=60".to_owned(),
    ];
    cm.extend(base.iter().cloned());
    // the master is made by the first call, also part of its figure
    let master = measure(|| openssh(&cm));
    let mut exit = vec!["-O".to_owned(), "exit".to_owned()];
    exit.extend(cm.iter().cloned());

    // the transport alone: SFTP reads of a 1 KiB file
    let file = dir.path().join("small.txt");
    std::fs::write(&file, "x".repeat(1024)).expect("file");
    let dl = json!({"action": "download", "target": "box", "remote_path": file});
    let infra_dl = measure(|| {
        let plan =
            engine::compile_call("ssh", &dl, &engine::CompileOptions::default()).expect("compiles");
        let o = engine.execute(&plan, serde_json::Map::new(), &RunOptions::default());
        assert!(o.ok(), "{:?}", o.steps);
    });
    let batch = dir.path().join("batch");
    std::fs::write(&batch, format!("get {} /dev/null\n", file.display())).expect("batch");
    let sftp_fresh = measure(|| sftp_get(&for_sftp(&base), &batch));
    let sftp_cm = measure(|| sftp_get(&for_sftp(&cm), &batch));
    let _ = Command::new("ssh")
        .args(&exit)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();

    table(
        &format!("{CALLS} sequential `echo ok` calls to one target (loopback sshd):"),
        &[
            ("infra ssh.exec (engine: plan, evidence, audit)", &infra),
            ("OpenSSH, ControlMaster", &master),
            ("OpenSSH, fresh connection", &fresh),
        ],
    );
    table(
        &format!("{CALLS} sequential SFTP reads of a 1 KiB file (no remote shell):"),
        &[
            (
                "infra ssh.download (engine: plan, evidence, audit)",
                &infra_dl,
            ),
            ("sftp, ControlMaster", &sftp_cm),
            ("sftp, fresh connection", &sftp_fresh),
        ],
    );
}
