//! `infra doctor`: local checks, and `--connect` against real servers.

use serde_json::{Value, json};

fn doctor(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Value) {
    let out = crate::infra_in(dir, dir)
        .arg("doctor")
        .arg("--json")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("infra doctor");
    (out.status.code(), crate::stdout_json(&out))
}

fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {v}"))
}

#[test]
fn local_checks_name_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tmp");
    let (code, v) = doctor(dir.path(), &[], &[]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["ok"], true);
    for name in [
        "profiles directory",
        "runbooks",
        "targets",
        "store",
        "audit log",
        "policy",
        "switches",
    ] {
        assert_eq!(check(&v, name)["ok"], true, "{name}: {v}");
    }

    std::fs::write(
        dir.path().join("targets.json"),
        r#"{"prod": {"hots": "x"}}"#,
    )
    .expect("targets");
    let (code, v) = doctor(dir.path(), &[], &[]);
    assert_eq!(code, Some(1));
    let t = check(&v, "targets");
    assert_eq!(t["ok"], false);
    assert!(
        t["detail"]
            .as_str()
            .is_some_and(|d| d.contains("targets.json:1:") && d.contains("hots")),
        "{t}"
    );
    assert_eq!(t["hint"], "did you mean `host`?");
    std::fs::remove_file(dir.path().join("targets.json")).expect("rm");

    // a policy with errors: located, and said to refuse every write
    std::fs::write(dir.path().join("policy.yaml"), "read_only: maybe\n").expect("policy");
    let (code, v) = doctor(dir.path(), &[], &[]);
    assert_eq!(code, Some(1));
    let p = check(&v, "policy");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("policy.yaml:1:") && d.contains("every write is refused")),
        "{p}"
    );
    std::fs::remove_file(dir.path().join("policy.yaml")).expect("rm");

    // a record edited in the audit log
    let set = crate::infra_in(dir.path(), dir.path())
        .args(["state", "set", "k", "1"])
        .output()
        .expect("state set");
    assert!(set.status.success());
    let log = dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&log).expect("the call was audited");
    std::fs::write(&log, text.replacen("\"ts\":\"2", "\"ts\":\"1", 1)).expect("edit");
    let (code, v) = doctor(dir.path(), &[], &[]);
    assert_eq!(code, Some(1));
    assert_eq!(check(&v, "audit log")["ok"], false, "{v}");
}

#[test]
fn connect_reaches_every_target() {
    let sshd = crate::support::sshd::Sshd::start();
    let pg = crate::support::postgres::Postgres::start();
    let srv = crate::support::http::HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let mut down = crate::ssh::target(&sshd);
    down["port"] = json!(crate::support::free_port());
    std::fs::write(
        dir.path().join("targets.json"),
        json!({
            "box": crate::ssh::target(&sshd),
            "db": {"postgres": {"host": "127.0.0.1", "port": pg.port, "user": pg.user, "database": pg.database,
                                "password_env": "DB_PASSWORD", "sslmode": "disable"}},
            "api": {"http": {"base_url": srv.url("/json")}},
        })
        .to_string(),
    )
    .expect("targets");
    let env = [("DB_PASSWORD", pg.password.as_str())];
    let (code, v) = doctor(dir.path(), &["--connect"], &env);
    assert_eq!(code, Some(0), "{v}");
    assert!(
        check(&v, "ssh box")["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&sshd.host_fingerprint()))
    );
    assert!(
        check(&v, "postgres db")["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("PostgreSQL")),
        "{v}"
    );
    assert_eq!(check(&v, "http api")["ok"], true);
    assert!(!v.to_string().contains(&pg.password));

    // a read-only target whose role the server lets write fails the check, with the reason
    std::fs::write(
        dir.path().join("targets.json"),
        json!({"ro": {"postgres": {"host": "127.0.0.1", "port": pg.port, "user": pg.user, "database": pg.database,
                                    "password_env": "DB_PASSWORD", "sslmode": "disable", "read_only": true}}})
        .to_string(),
    )
    .expect("targets");
    let (code, v) = doctor(dir.path(), &["--connect"], &env);
    assert_eq!(code, Some(1), "{v}");
    let c = check(&v, "postgres ro");
    assert_eq!(c["ok"], false);
    assert!(c.to_string().contains("superuser"), "{c}");

    std::fs::write(
        dir.path().join("targets.json"),
        json!({"down": down}).to_string(),
    )
    .expect("targets");
    let (code, v) = doctor(dir.path(), &["--connect"], &env);
    assert_eq!(code, Some(1));
    let c = check(&v, "ssh down");
    assert!(
        c["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("connect_failed")),
        "{c}"
    );
    // the probes are calls like any other: audited
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit");
    assert!(audit.contains("\"tool\":\"ssh\""));
}
