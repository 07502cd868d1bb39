//! Smoke test of the throwaway sshd in `tests/support/sshd.rs`, driven with the real `ssh` client.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::sshd::Sshd;

/// Runs `ssh <args> echo ok` against the server.
fn ssh_echo(sshd: &Sshd, args: &[String]) -> Output {
    Command::new("ssh")
        .args(args)
        .arg("echo ok")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run ssh: {e}\n{}", sshd.log()))
}

fn assert_ok(sshd: &Sshd, out: &Output) {
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "ssh: {}\nstdout: {}\nstderr: {}\n--- sshd log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
}

#[test]
fn sshd_accepts_the_key_and_detects_a_new_host_key() {
    let mut sshd = Sshd::start();
    let args = sshd.openssh_args();
    assert_ok(&sshd, &ssh_echo(&sshd, &args));

    let fp = sshd.host_fingerprint();
    assert!(fp.starts_with("SHA256:"), "{fp}");
    let kh = std::fs::read_to_string(&sshd.known_hosts).expect("read known_hosts");
    assert!(
        kh.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 AAAA", sshd.port)),
        "{kh}"
    );

    // The unauthorized key is refused.
    let wrong: Vec<String> = args
        .iter()
        .map(|a| {
            if *a == sshd.key.display().to_string() {
                sshd.wrong_key.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let out = ssh_echo(&sshd, &wrong);
    assert!(!out.status.success(), "wrong key accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Same port and keys after a restart.
    let port = sshd.port;
    sshd.restart();
    assert_eq!(sshd.port, port);
    assert_eq!(sshd.host_fingerprint(), fp);
    assert_ok(&sshd, &ssh_echo(&sshd, &args));

    // A new host key on the same port fails host key verification against the old known_hosts.
    sshd.new_host_key();
    assert_eq!(sshd.port, port);
    assert_ne!(sshd.host_fingerprint(), fp);
    let out = ssh_echo(&sshd, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ssh accepted a changed host key");
    assert!(err.contains("Host key verification failed"), "{err}");

    sshd.stop();
    sshd.stop(); // idempotent
    let refused = TcpStream::connect(("127.0.0.1", port)).expect_err("port still open after stop");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    assert!(
        sshd.log().contains("Server listening on 127.0.0.1"),
        "{}",
        sshd.log()
    );
}

#[test]
fn stop_kills_open_sessions() {
    let mut sshd = Sshd::start();
    // A session that would outlive the test if its per-connection sshd were not killed; it prints
    // the pid of the remote process (the shell, replaced by `sleep`).
    let mut session = Command::new("ssh")
        .args(sshd.openssh_args())
        .arg("echo $$; exec sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssh");
    let mut line = String::new();
    BufReader::new(session.stdout.take().expect("ssh stdout"))
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("session did not start: {e}\n{}", sshd.log()));
    let remote: u32 = line
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("remote pid {line:?}: {e}\n{}", sshd.log()));
    let t = Instant::now();
    sshd.stop();
    let status = session.wait().expect("wait ssh");
    assert!(!status.success(), "{status}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The remote command is gone too (or a zombie waiting for init to reap it).
    let stat = std::fs::read_to_string(format!("/proc/{remote}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
    assert!(
        state.is_none_or(|r| r.starts_with('Z')),
        "remote process survived: {stat}"
    );
}
