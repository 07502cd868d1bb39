//! The conventions every command keeps: text by default and `--json` for JSON, `-n/--limit` on every
//! listing, the same keys (`run_id`, `job_id`) and lowercase statuses, ids by unique prefix.

use crate::project::Project;
use crate::stdout_json;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `infra <args>` in the project: its output, whatever the exit.
fn infra(p: &Project, args: &[&str]) -> std::process::Output {
    p.infra().args(args).output().expect("infra")
}

#[test]
fn state_prints_text_by_default_json_with_the_flag_and_lists_are_limited() {
    let p = Project::new();
    for (k, v) in [("app.port", "8080"), ("app.name", "web"), ("other", "x")] {
        assert_eq!(infra(&p, &["state", "set", k, v]).status.code(), Some(0));
    }
    let got = infra(&p, &["state", "get", "app.name"]);
    assert_eq!(text(&got.stdout), "web\n", "a string is printed as it is");
    let got = infra(&p, &["state", "get", "app.name", "--json"]);
    let v = stdout_json(&got);
    assert_eq!(v["value"], "web");
    assert_eq!(v["scope"], "persistent");

    let list = infra(&p, &["state", "list", "app."]);
    assert_eq!(
        text(&list.stdout),
        "app.name = \"web\"\napp.port = 8080\n",
        "{}",
        text(&list.stderr)
    );
    let list = infra(&p, &["state", "list", "app.", "--json"]);
    assert_eq!(stdout_json(&list)["items"]["app.port"], 8080);
    let one = infra(&p, &["state", "list", "-n", "1", "--json"]);
    let v = stdout_json(&one);
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(v["truncated"], true, "{v}");
    let one = infra(&p, &["state", "list", "--limit", "1"]);
    assert_eq!(text(&one.stdout).lines().count(), 1);
    assert!(text(&one.stderr).contains("`-n` shows more"));
}

#[test]
fn runs_and_artifacts_list_as_text_or_json_with_run_id_and_lowercase_statuses() {
    let p = Project::new().unsafe_local().runbook(
        "two",
        "steps:\n  - {id: hi, tool: local, args: {action: exec, command: 'echo hello'}}\n  - {id: no, tool: local, needs: [hi], args: {action: exec, command: 'echo bye; exit 4'}}\n",
    );
    let run = infra(&p, &["run", "two"]);
    assert_eq!(run.status.code(), Some(1));
    let summary = text(&run.stdout);
    assert!(summary.contains("succeeded  hi"), "{summary}");
    assert!(summary.contains("failed     no"), "{summary}");
    assert!(summary.contains("two failed in"), "{summary}");
    assert!(
        !summary.contains("FAILED") && !summary.contains("Succeeded"),
        "{summary}"
    );
    let json = stdout_json(&infra(&p, &["run", "two", "--json"]));
    assert_eq!(json["status"], "failed");
    assert_eq!(json["steps"][1]["status"], "failed");
    let run_id = json["run_id"].as_str().expect("run_id").to_owned();

    let runs = stdout_json(&infra(&p, &["runs", "list", "--json"]));
    let rows = runs.as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["run_id"], run_id.as_str(), "{runs}");
    assert!(
        rows[0].get("id").is_none(),
        "one key for a run's id: {runs}"
    );
    assert_eq!(rows[0]["status"], "failed");
    let one = stdout_json(&infra(&p, &["runs", "list", "-n", "1", "--json"]));
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    let shown = stdout_json(&infra(&p, &["runs", "show", &run_id[..6], "--json"]));
    assert_eq!(shown["run"]["run_id"], run_id.as_str());

    let listed = infra(&p, &["artifacts", "list"]);
    let t = text(&listed.stdout);
    assert!(
        t.lines().all(|l| l.contains(" artifact://runs/two/")),
        "text, one artifact a line: {t}"
    );
    let listed = stdout_json(&infra(&p, &["artifacts", "list", "--json"]));
    let uri = listed[0]["uri"].as_str().expect("uri").to_owned();
    let one = stdout_json(&infra(&p, &["artifacts", "list", "--limit", "1", "--json"]));
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    let plain = infra(&p, &["artifacts", "get", &uri]);
    let read = stdout_json(&infra(&p, &["artifacts", "get", &uri, "--json"]));
    assert_eq!(read["uri"], uri.as_str());
    assert_eq!(
        read["text"],
        text(&plain.stdout).as_str(),
        "the text as it is"
    );
    let tail = stdout_json(&infra(&p, &["artifacts", "tail", &uri, "--json"]));
    assert_eq!(tail["text"], read["text"]);

    // the audit log's listing takes the same flag
    let audit = infra(&p, &["audit", "tail", "--limit", "2", "--json"]);
    assert_eq!(text(&audit.stdout).lines().count(), 2);
}

#[test]
fn jobs_print_text_or_json_with_job_id_and_take_id_prefixes() {
    let p = Project::new();
    let engine = p.engine();
    let store = engine.store().expect("store");
    for (id, status) in [("abc11111", "succeeded"), ("abd22222", "failed")] {
        store.job_started(id, "http", "request").expect("job");
        store
            .job_finished(
                id,
                status,
                &serde_json::json!({"ok": status == "succeeded"}),
            )
            .expect("job");
    }
    let list = infra(&p, &["jobs", "list"]);
    assert!(
        text(&list.stdout).contains("abc11111  http.request"),
        "{}",
        text(&list.stdout)
    );
    let list = stdout_json(&infra(&p, &["jobs", "list", "-n", "1", "--json"]));
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert!(list[0]["job_id"].is_string(), "{list}");

    let st = infra(&p, &["jobs", "status", "abc"]);
    assert_eq!(st.status.code(), Some(0), "{}", text(&st.stderr));
    let t = text(&st.stdout);
    assert!(t.starts_with("job abc11111\n"), "{t}");
    assert!(t.contains("status:   succeeded"), "{t}");
    let st = stdout_json(&infra(&p, &["jobs", "status", "abd", "--json"]));
    assert_eq!(st["job_id"], "abd22222");
    assert_eq!(st["status"], "failed");

    let amb = infra(&p, &["jobs", "status", "ab"]);
    assert_eq!(amb.status.code(), Some(2));
    let e = text(&amb.stderr);
    assert!(
        e.contains("prefix `ab` is ambiguous") && e.contains("abc11111") && e.contains("abd22222"),
        "{e}"
    );
    let none = infra(&p, &["jobs", "status", "zz"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(text(&none.stderr).contains("no job has an id starting with `zz`"));
}

#[test]
fn run_ids_resolve_by_unique_prefix_in_show_and_logs() {
    let p = Project::new();
    let engine = p.engine();
    let store = engine.store().expect("store");
    for id in ["f00d0001", "f00d0002"] {
        let dir = p.path().join("runs/rb").join(id);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("journal.jsonl"), "").expect("journal");
        store
            .run_started(id, "rb", &dir, None, "2026-01-01T00:00:00Z", false)
            .expect("run");
        store.run_finished(id, "succeeded", false).expect("run");
    }
    for cmd in ["show", "logs"] {
        let amb = infra(&p, &["runs", cmd, "f00d"]);
        assert_eq!(amb.status.code(), Some(2), "{cmd}");
        let e = text(&amb.stderr);
        assert!(
            e.contains("ambiguous") && e.contains("f00d0001  rb") && e.contains("f00d0002  rb"),
            "{cmd}: {e}"
        );
        let missing = infra(&p, &["runs", cmd, "beef"]);
        assert_eq!(missing.status.code(), Some(2));
        assert!(text(&missing.stderr).contains("see `infra runs list`"));
    }
    let one = infra(&p, &["runs", "show", "f00d0002", "--json"]);
    assert_eq!(stdout_json(&one)["run"]["run_id"], "f00d0002");
}

#[test]
fn validate_takes_json_and_its_older_format_flag() {
    let p = Project::new();
    for args in [
        &["validate", "--json"][..],
        &["validate", "--format", "json"][..],
    ] {
        let out = infra(&p, args);
        assert_eq!(stdout_json(&out)["ok"], true, "{args:?}");
    }
}
