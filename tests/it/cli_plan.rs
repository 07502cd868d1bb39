//! `infra validate`, `plan`, `graph` and `list` through the binary: exit codes, diagnostics, rendered
//! plans and the runbook listing.

use crate::project::Project;
use crate::{data_dir, stdout_json};

#[test]
fn validate_exit_codes_follow_the_result() {
    let p = Project::new();
    p.infra().arg("validate").assert().code(0);
    p.infra()
        .arg("validate")
        .arg(data_dir().join("ok/everything.yaml"))
        .assert()
        .code(0);
    let out = p
        .infra()
        .arg("validate")
        .arg(data_dir().join("err/unknown-key.yaml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error[unknown-key]: unknown key `descripton`"),
        "{err}"
    );
    assert!(err.contains("unknown-key.yaml:2:1"), "{err}");
    assert!(err.contains("help: did you mean `description`?"), "{err}");
    assert!(err.contains('^'), "carets: {err}");
    p.infra()
        .args(["validate", "no.such.runbook"])
        .assert()
        .code(2);
    p.infra()
        .args(["validate", "/nonexistent/x.yaml"])
        .assert()
        .code(2);
    let missing = p
        .infra()
        .args(["validate", "--json", "/nonexistent/x.yaml"])
        .output()
        .expect("run");
    assert_eq!(
        stdout_json(&missing)["diagnostics"][0]["code"],
        "file-not-found",
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn validate_json_carries_the_same_diagnostics() {
    let p = Project::new();
    let out = p
        .infra()
        .args(["validate", "--format", "json"])
        .arg(data_dir().join("err/dependency-cycle.yaml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let v = stdout_json(&out);
    assert_eq!(v["ok"], false);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "dependency-cycle");
    assert_eq!(d["severity"], "error");
    assert!(
        d["line"].as_u64().is_some() && d["column"].as_u64().is_some(),
        "{d}"
    );
    assert!(
        d["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("dependency-cycle.yaml"))
    );
}

#[test]
fn plan_renders_shell_commands_quoted_and_runs_nothing() {
    let p = Project::new().file(
        "greet.yaml",
        "name: greet\ninputs: [who]\nsteps:\n  - id: say\n    tool: local\n    args: { action: exec, command: \"echo hello {{ input.who }} > /dev/null\" }\n",
    );
    let rb = p.path().join("greet.yaml");
    let hostile = "x'; touch pwned; echo '$(id)";
    let out = p
        .infra()
        .arg("plan")
        .arg(&rb)
        .args(["--json", "--input"])
        .arg(format!("who={hostile}"))
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&out);
    let cmd = v["nodes"][0]["command"].as_str().expect("command");
    assert_eq!(
        cmd,
        format!(
            "echo hello {} > /dev/null",
            dsl::template::shell_quote(hostile)
        )
    );
    // the quoted word is exactly one argument to a real shell
    let echoed = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' {}",
            dsl::template::shell_quote(hostile)
        ))
        .output()
        .expect("sh");
    assert_eq!(String::from_utf8_lossy(&echoed.stdout), hostile);
    assert!(v["digest"].as_str().is_some_and(|d| d.len() == 64));
    assert_eq!(v["effects"], "write");
    assert!(!p.path().join("pwned").exists());

    // the same inputs give the same digest; other inputs another
    let again = p
        .infra()
        .arg("plan")
        .arg(&rb)
        .args(["--json", "--input"])
        .arg(format!("who={hostile}"))
        .output()
        .expect("run");
    assert_eq!(stdout_json(&again)["digest"], v["digest"]);
    let other = p
        .infra()
        .arg("plan")
        .arg(&rb)
        .args(["--json", "--input", "who=bob"])
        .output()
        .expect("run");
    assert_ne!(stdout_json(&other)["digest"], v["digest"]);
}

#[test]
fn plan_refuses_bad_inputs_with_usage_status() {
    let p = Project::new();
    let out = p
        .infra()
        .args(["plan", "repo.snapshot", "--input", "limit=0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("input `limit`"), "{err}");
    assert!(err.contains("minimum of 1"), "{err}");
    assert!(!err.contains("1.0"), "a whole bound is shown whole: {err}");
    let out = p
        .infra()
        .args(["plan", "hello.world"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing input `message`"));
    let out = p
        .infra()
        .args(["plan", "hello.world", "--input", "mesage=x"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `message`?"));
    let out = p
        .infra()
        .args(["plan", "repo.snapshto"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `repo.snapshot`?"));
}

#[test]
fn plan_shows_order_dependencies_and_secrets_as_placeholders() {
    let p = Project::new();
    let out = p
        .infra()
        .arg("plan")
        .arg(data_dir().join("ok/everything.yaml"))
        .args(["--json", "--input", "token=hunter2", "--input", "count=4"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("hunter2"), "secret leaked: {text}");
    let v = stdout_json(&out);
    let ids: Vec<&str> = v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(ids, ["seed", "each", "read", "cleanup"]);
    assert_eq!(v["nodes"][0]["args"]["value"], 4, "typed single expression");
    assert_eq!(
        v["nodes"][2]["needs"][0], "seed",
        "dependency from a template reference"
    );
    assert_eq!(v["nodes"][3]["phase"], "finally");
    assert_eq!(v["inputs"]["token"], "[secret:token]");
}

#[test]
fn graph_draws_mermaid_and_dot() {
    let p = Project::new();
    let out = p
        .infra()
        .args(["graph", "repo.snapshot"])
        .output()
        .expect("run");
    let m = String::from_utf8_lossy(&out.stdout);
    assert!(m.starts_with("flowchart TD"), "{m}");
    assert!(m.contains("status<br/>repo.status"), "{m}");
    let out = p
        .infra()
        .args(["graph", "--format", "dot"])
        .arg(data_dir().join("ok/everything.yaml"))
        .output()
        .expect("run");
    let d = String::from_utf8_lossy(&out.stdout);
    assert!(d.starts_with("digraph \"everything\""), "{d}");
    assert!(d.contains("\"seed\" -> \"each\""), "{d}");
    assert!(d.contains("\"seed\" -> \"read\""), "{d}");
}

#[test]
fn list_shows_builtin_and_project_runbooks() {
    let p = Project::new()
        .file(
            "runbooks.json",
            &std::fs::read_to_string(data_dir().join("ok/runbooks.json")).expect("read"),
        )
        .runbook(
            "deploy.staging",
            "description: Deploy to staging.\ntags: [deploy]\ninputs: [service]\nsteps:\n  - id: mark\n    tool: state\n    args: { action: set, key: deployed, value: \"{{ input.service }}\" }\n",
        );
    let out = p.infra().args(["list", "--json"]).output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let v = stdout_json(&out);
    let rows = v["runbooks"].as_array().expect("rows");
    let find = |n: &str| {
        rows.iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("no {n} in {v}"))
    };
    assert_eq!(find("repo.snapshot")["source"], "builtin");
    assert_eq!(find("repo.snapshot")["effects"], "read");
    // the project's runbooks.json overrides the built-in hello.world by name
    assert_eq!(find("hello.world")["source"], "project");
    assert_eq!(find("hello.world")["overrides"], "builtin");
    assert_eq!(find("deploy.staging")["source"], "project");
    assert!(find("deploy.staging")["overrides"].is_null());
    assert!(find("repo.snapshot")["overrides"].is_null());
    assert_eq!(find("deploy.staging")["tags"][0], "deploy");
    assert_eq!(find("gitops.k8s.diff")["effects"], "write");
    let human = p.infra().arg("list").output().expect("run");
    let t = String::from_utf8_lossy(&human.stdout);
    assert!(
        t.lines().next().is_some_and(|l| l.starts_with("NAME")),
        "{t}"
    );
    assert!(t.contains("deploy.staging"), "{t}");
    let hello = t
        .lines()
        .find(|l| l.starts_with("hello.world"))
        .expect("hello.world listed");
    assert!(hello.contains("project*"), "{t}");
    assert!(
        t.contains("* replaces the built-in runbook of the same name"),
        "{t}"
    );
    let deploy = t
        .lines()
        .find(|l| l.starts_with("deploy.staging"))
        .expect("listed");
    assert!(!deploy.contains('*'), "{t}");
}

#[test]
fn the_version_names_the_commit() {
    let p = Project::new();
    let out = p.infra().arg("--version").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    assert_eq!(
        text.trim(),
        format!("infra {} ({head})", env!("CARGO_PKG_VERSION"))
    );
}
