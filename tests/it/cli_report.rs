//! `infra report` and `infra graph --format svg` on real runs: a failing step with hostile stderr,
//! a retried step, `finally` and a rollback; the run's own `report.html`, read back as an artifact.

use std::path::Path;
use std::process::Command as Std;

use crate::project::Project;

const HOSTILE: &str = r#"<script>alert("x")</script> ]]> & 'q'"#;

fn failing() -> Project {
    Project::new().unsafe_local().runbook(
        "deploy",
        &format!(
            "steps:\n  - id: build\n    tool: local\n    args: {{action: exec, command: 'echo built'}}\n    rollback: {{tool: local, args: {{action: exec, command: 'echo undo'}}}}\n  - id: flaky\n    needs: [build]\n    tool: local\n    retry: {{attempts: 2, delay_ms: 1, on: [nonzero_exit]}}\n    args: {{action: exec, command: 'for i in $(seq 1 30); do echo \"noise $i\" >&2; done; printf \"%s\\n\" {} >&2; exit 3'}}\n  - id: after\n    needs: [flaky]\n    tool: local\n    args: {{action: exec, command: 'echo never'}}\nfinally:\n  - id: cleanup\n    tool: local\n    args: {{action: exec, command: 'echo clean'}}\n",
            shell_single(HOSTILE)
        ),
    )
}

/// `s` as one single-quoted shell word, written inside a YAML single-quoted scalar.
fn shell_single(s: &str) -> String {
    // YAML doubles a single quote; the shell ends, escapes and reopens one
    format!("''{}''", s.replace('\'', r"''\''''"))
}

/// Checks well-formedness with Python's XML parser (CI has `python3` for the MCP end-to-end suite).
fn parses_as_xml(path: &Path) {
    let out = Std::new("python3")
        .args([
            "-c",
            "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])",
        ])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{} is not well-formed XML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cli_report_of_a_failing_run() {
    let p = failing();
    let out = p
        .infra()
        .args(["run", "deploy", "--json"])
        .output()
        .expect("run");
    let v = crate::stdout_json(&out);
    assert_eq!(v["status"], "failed", "{v}");
    let run_id = v["run_id"].as_str().expect("id").to_owned();
    let report_uri = v["report"].as_str().expect("a report URI");
    assert!(report_uri.ends_with("/report.html"), "{report_uri}");
    let rel = report_uri.strip_prefix("artifact://").expect("scheme");
    let own = std::fs::read_to_string(p.path().join(rel)).expect("the run's report.html");
    assert!(p.path().join(rel).with_file_name("plan.json").is_file());

    // `infra report` makes the same report from the records
    let file = p.path().join("out/r.html");
    std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
    let out = p
        .infra()
        .args(["report", &run_id[..8], "-o"])
        .arg(&file)
        .output()
        .expect("report");
    assert!(out.status.success(), "{out:?}");
    let html = std::fs::read_to_string(&file).expect("written");
    for h in [&html, &own] {
        let at = |s: &str| h.find(s).unwrap_or_else(|| panic!("no {s}"));
        assert!(at("id=\"summary\"") < at("id=\"why\""));
        assert!(at("id=\"why\"") < at("id=\"graph\""));
        assert!(at("id=\"graph\"") < at("id=\"timeline\""));
        assert!(at("id=\"timeline\"") < at("id=\"steps\""));
        assert!(h.contains("http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'sha256-"));
        assert!(!h.to_lowercase().contains("<script"), "no script at all");
        assert!(!h.contains("https://"));
        // the failing step, its error, the last 20 lines of its stderr, escaped
        assert!(h.contains("<code>flaky</code>"));
        assert!(h.contains("nonzero_exit"));
        assert!(h.contains("noise 30") && h.contains("noise 12\n"));
        assert!(!h.contains("noise 11\n"), "only the last 20 lines");
        assert!(h.contains(
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; ]]&gt; &amp; &#39;q&#39;"
        ));
        // retried, skipped with a reason, finally and rollback shown
        assert!(h.contains("failed · 2 attempts"));
        assert!(h.contains("bar s-failed retry"));
        assert!(h.contains("skipped: "));
        assert!(h.contains("finally · local.exec"));
        assert!(h.contains("rollback of build"));
    }
    // links: relative in the run's directory, absolute elsewhere
    assert!(own.contains("href=\"./flaky/stderr\""));
    assert!(html.contains("href=\"file:///"));
    parses_as_xml(&file);

    // to stdout, the same bytes again
    let again = p
        .infra()
        .args(["report", &run_id, "-o", "-"])
        .output()
        .expect("report");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        html.replace(
            &format!(
                "file://{}/",
                engine::report::html::percent(
                    &p.path().join(rel).parent().expect("dir").to_string_lossy()
                )
            ),
            "./",
        )
    );

    // the text summary names the report
    let out = p.infra().args(["run", "deploy"]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("report: ") && text.contains("report.html"),
        "{text}"
    );

    // and it is an artifact
    let out = p
        .infra()
        .args(["artifacts", "get", report_uri, "--max-bytes", "2000000"])
        .output()
        .expect("get");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("<!DOCTYPE html>"));
}

#[test]
fn cli_graph_as_svg() {
    let p = failing();
    let out = p
        .infra()
        .args(["graph", "deploy", "--format", "svg"])
        .output()
        .expect("graph");
    assert!(out.status.success(), "{out:?}");
    let svg = String::from_utf8(out.stdout).expect("utf-8");
    assert!(svg.starts_with("<?xml"));
    // four steps and a rollback, no statuses
    assert_eq!(svg.matches("class=\"n s-plan\"").count(), 5);
    assert!(svg.contains("rollback of build") && svg.contains("finally · local.exec"));
    assert!(!svg.contains("<script"));
    let file = p.path().join("g.svg");
    std::fs::write(&file, &svg).expect("write");
    parses_as_xml(&file);
}

#[test]
fn cli_single_calls_get_no_report() {
    let p = Project::new().unsafe_local();
    let e = p.engine();
    let o = crate::call_tool(
        &e,
        "local",
        serde_json::json!({"action": "exec", "command": "echo out; echo err >&2; exit 1"}),
        &engine::run::CancelToken::new(),
    );
    assert_eq!(o.status.as_str(), "failed");
    let found = walk(&p.path().join("runs"));
    assert!(found.iter().any(|f| f.ends_with("/stderr")), "{found:?}");
    assert!(
        !found
            .iter()
            .any(|f| f.ends_with("report.html") || f.ends_with("plan.json")),
        "{found:?}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}
