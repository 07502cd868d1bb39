//! The original product's `runbooks.json` syntax: it loads with `deprecated-syntax` warnings, runs with
//! the original's meaning, and `validate --fix` rewrites it into a file that runs the same.

use serde_json::{Value, json};

use crate::project::Project;
use crate::stdout_json;

const ORIGINAL: &str = r#"{
  "legacy.demo": {
    "description": "Written for the original.",
    "tags": ["test"],
    "inputs": ["env"],
    "stop_on_error": false,
    "seed_state": {"greeting": "hi"},
    "steps": [
      {"id": "get", "tool": "mcp_state",
       "args": {"action": "get", "key": "greeting", "output": {"path": "value"}, "store_as": {"key": "copy", "scope": "session"}}},
      {"id": "prod_only", "tool": "state",
       "when": {"and": [{"path": "steps.get", "equals": "hi"}, {"path": "input.env", "in": ["prod", "staging"]}]},
       "args": {"action": "set", "key": "seen", "value": "{{ steps.get }}:{{ input.env }}:{{ ?state.absent }}"}},
      {"id": "dev_only", "tool": "state", "when": {"path": "input.env", "equals": "dev"},
       "args": {"action": "set", "key": "dev", "value": "1"}},
      {"id": "each", "tool": "state", "foreach": {"items": ["a", "b"], "as": "letter"},
       "args": {"action": "set", "key": "k_{{ letter }}", "value": "{{ index }}"}},
      {"id": "never", "tool": "state",
       "retry": {"max_attempts": 2, "delay_ms": 1, "until": {"path": "result.found", "equals": true}},
       "args": {"action": "get", "key": "absent"}},
      {"id": "after", "tool": "state", "args": {"action": "get", "key": "copy"}}
    ]
  }
}"#;

/// `infra run legacy.demo --input env=<env> --json`: each step's id, status, attempts and result.
fn run(p: &Project, env: &str) -> Vec<Value> {
    let out = p
        .infra()
        .args([
            "run",
            "legacy.demo",
            "--input",
            &format!("env={env}"),
            "--json",
        ])
        .output()
        .expect("run");
    let v = stdout_json(&out);
    v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| json!({"id": s["id"], "status": s["status"], "attempts": s["attempts"], "result": s["result"]}))
        .collect()
}

fn step<'a>(steps: &'a [Value], id: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {steps:#?}"))
}

#[test]
fn an_original_runbooks_json_runs_with_its_meaning_and_fix_keeps_it() {
    let p = Project::new().file("runbooks.json", ORIGINAL);
    let out = p.infra().arg("validate").output().expect("validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("warning[deprecated-syntax]"), "{stderr}");
    assert!(stderr.contains("runbooks.json:6:5"), "{stderr}");

    let prod = run(&p, "prod");
    assert_eq!(step(&prod, "seed_greeting")["status"], "succeeded");
    assert_eq!(step(&prod, "get")["result"]["value"], "hi");
    assert_eq!(step(&prod, "prod_only")["status"], "succeeded");
    assert_eq!(step(&prod, "prod_only")["result"]["value"], "hi:prod:");
    assert_eq!(step(&prod, "dev_only")["status"], "skipped");
    assert_eq!(step(&prod, "each")["result"][0]["key"], "k_a");
    assert_eq!(step(&prod, "each")["result"][1]["value"], 1);
    assert_eq!(step(&prod, "never")["status"], "failed");
    assert_eq!(step(&prod, "never")["attempts"], 2);
    // stop_on_error: false, so the run went on; store_as saved the shaped result
    assert_eq!(step(&prod, "after")["result"]["value"], "hi");
    let dev = run(&p, "dev");
    assert_eq!(step(&dev, "prod_only")["status"], "skipped");
    assert_eq!(step(&dev, "dev_only")["status"], "succeeded");

    let out = p.infra().args(["validate", "--fix"]).output().expect("fix");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("fixed "), "{stdout}");
    assert!(stdout.contains("runbooks.json:6:5"), "{stdout}");
    let text = std::fs::read_to_string(p.path().join("runbooks.json")).expect("read");
    assert!(
        !text.contains("stop_on_error") && !text.contains("max_attempts"),
        "{text}"
    );
    assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text}");
    let names: Vec<String> = std::fs::read_dir(p.path())
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(!names.iter().any(|n| n.contains("infra-fix")), "{names:?}");

    let out = p.infra().arg("validate").output().expect("validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_eq!(run(&p, "prod"), prod);
    assert_eq!(run(&p, "dev"), dev);

    let out = p.infra().args(["validate", "--fix"]).output().expect("fix");
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to fix"));
}

#[test]
fn fix_leaves_files_with_errors_and_built_ins_alone() {
    let broken = r#"{"legacy.broken": {"steps": [{"id": "s", "tool": "state",
        "retry": {"max_attempts": "{{ input.n }}"}, "args": {"action": "get", "key": "k"}}]}}"#;
    let p = Project::new().file("runbooks.json", broken);
    let out = p.infra().args(["validate", "--fix"]).output().expect("fix");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not fixed"), "{stderr}");
    assert!(stderr.contains("error[deprecated-syntax]"), "{stderr}");
    assert!(stderr.contains("attempts"), "{stderr}");
    let text = std::fs::read_to_string(p.path().join("runbooks.json")).expect("read");
    assert_eq!(text, broken);

    let commented = "# kept by hand\nname: y\ninputs: [x]\nsteps:\n  - id: a\n    tool: state\n    when: {path: input.x, exists: true}\n    args: {action: get, key: k}\n";
    let p = p.file("runbooks/y.yaml", commented);
    let out = p
        .infra()
        .args(["validate", "--fix", "runbooks/y.yaml"])
        .output()
        .expect("fix");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("comments"), "{stderr}");
    let text = std::fs::read_to_string(p.path().join("runbooks/y.yaml")).expect("read");
    assert_eq!(text, commented);

    let out = p
        .infra()
        .args(["validate", "--fix", "repo.snapshot"])
        .output()
        .expect("fix");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("built-in"), "{stderr}");
}
