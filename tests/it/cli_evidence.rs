//! Where a run's evidence lives and how it is read: single calls share their process's calls journal
//! (no directory unless they write an artifact), and every run's URI, journal and files read through
//! `infra artifacts` and `infra runs show`, whichever journal holds them.

use serde_json::Value;

use crate::project::Project;

fn json_of(p: &Project, args: &[&str]) -> Value {
    let out = p.infra().args(args).output().expect("infra");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::stdout_json(&out)
}

fn text_of(p: &Project, args: &[&str]) -> String {
    let out = p.infra().args(args).output().expect("infra");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The records of a journal read as an artifact, one JSON value per line.
fn records(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn single_calls_share_one_journal_and_read_back_by_their_uris() {
    let p = Project::new();
    p.infra()
        .args(["state", "set", "colour", "blue"])
        .assert()
        .success();
    for _ in 0..3 {
        p.infra()
            .args(["state", "get", "colour"])
            .assert()
            .success();
    }
    // no directory per call: each process appended to its own calls journal
    assert!(
        !p.path().join("runs/state.get").exists(),
        "a call that wrote no artifact has no directory"
    );
    let journals: Vec<_> = std::fs::read_dir(p.path().join("runs/.calls"))
        .expect("calls journals")
        .flatten()
        .collect();
    assert_eq!(journals.len(), 4, "one per process");

    let listed = json_of(&p, &["runs", "list", "--json"]);
    let gets: Vec<&Value> = listed
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["runbook"] == "state.get")
        .collect();
    assert_eq!(gets.len(), 3, "{listed}");
    let id = gets[0]["run_id"].as_str().expect("id");
    // the run reads back whole from the shared journal: its own records, in order
    let shown = json_of(&p, &["runs", "show", &id[..10], "--json"]);
    let events: Vec<&str> = shown["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        events,
        [
            "run_started",
            "node_started",
            "node_finished",
            "run_finished"
        ]
    );
    assert!(
        shown["records"]
            .as_array()
            .expect("records")
            .iter()
            .all(|r| r["run_id"] == id),
        "{shown}"
    );
    assert_eq!(shown["state"], "finished");

    // the calls are found by runbook, and their journals read as artifacts
    let arts = json_of(
        &p,
        &[
            "artifacts",
            "list",
            "--runbook",
            "state.get",
            "-n",
            "10",
            "--json",
        ],
    );
    let uris: Vec<&str> = arts
        .as_array()
        .expect("artifacts")
        .iter()
        .map(|a| a["uri"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(uris.len(), 3, "{arts}");
    assert!(
        uris.iter()
            .all(|u| u.starts_with("artifact://runs/state.get/") && u.ends_with("/journal.jsonl"))
    );
    let mine = arts
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["run_id"] == id)
        .expect("this run's journal");
    let uri = mine["uri"].as_str().expect("uri");
    let text = text_of(&p, &["artifacts", "get", uri]);
    assert_eq!(text.len() as u64, mine["bytes"].as_u64().expect("bytes"));
    let recs = records(&text);
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[3]["event"], "run_finished");
    assert_eq!(recs[3]["status"], "succeeded", "{text}");
    assert_eq!(recs[1]["args"]["key"], "colour", "{text}");
    // a bounded read of it says where the rest is
    let part = text_of(
        &p,
        &["artifacts", "get", uri, "--offset", "5", "--max-bytes", "7"],
    );
    assert_eq!(part, text[5..12]);

    // the run URI itself lists what the run holds
    let run_uri = uri.trim_end_matches("/journal.jsonl");
    let listing: Value =
        serde_json::from_str(&text_of(&p, &["artifacts", "get", run_uri])).expect("listing");
    assert_eq!(listing["run_id"], id);
    assert_eq!(listing["journal"], uri);
    assert_eq!(listing["status"], "succeeded");
    assert_eq!(listing["artifacts"], Value::Array(Vec::new()));

    // a name that is not a run is not found, and nothing outside the runs is reachable
    for bad in [
        "artifact://runs/state.get/2026-01-01T000000Z-ffffffff/journal.jsonl",
        "artifact://runs/state.get/2026-01-01T000000Z-ffffffff",
        "artifact://runs/.calls",
        "artifact://runs/state.get/../../audit.jsonl",
    ] {
        let out = p
            .infra()
            .args(["artifacts", "get", bad])
            .output()
            .expect("infra");
        assert!(!out.status.success(), "{bad}");
    }
}

#[test]
fn a_runbook_runs_uri_lists_its_journal_and_files_and_the_list_filters() {
    let p = Project::new()
        .runbook(
            "two",
            "steps:\n  - {id: hello, tool: local, args: {action: exec, command: 'echo hi; echo oops >&2'}}\n  - {id: more, needs: [hello], tool: local, args: {action: exec, command: 'echo more'}}\n",
        )
        .runbook("other", "steps:\n  - {id: only, tool: local, args: {action: exec, command: 'echo other'}}\n")
        .unsafe_local();
    let run = json_of(&p, &["run", "two", "--json"]);
    let evidence = run["evidence"].as_str().expect("evidence URI").to_owned();
    let id = run["run_id"].as_str().expect("run id").to_owned();
    p.infra().args(["run", "other"]).assert().success();

    let listing: Value =
        serde_json::from_str(&text_of(&p, &["artifacts", "get", &evidence])).expect("listing");
    assert_eq!(listing["run_id"], id.as_str());
    assert_eq!(listing["runbook"], "two");
    assert_eq!(listing["status"], "succeeded");
    let held: Vec<&str> = listing["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .map(|a| a["uri"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        held,
        [
            format!("{evidence}/hello/stderr"),
            format!("{evidence}/hello/stdout"),
            format!("{evidence}/more/stdout"),
            // the rendered plan the run was decided on (written at its start) and its report (at its end)
            format!("{evidence}/plan.json"),
            format!("{evidence}/report.html"),
        ]
    );
    let journal = text_of(
        &p,
        &["artifacts", "get", &format!("{evidence}/journal.jsonl")],
    );
    assert_eq!(
        records(&journal).first().map(|r| r["event"].clone()),
        Some("run_started".into())
    );

    // by runbook: this run's journal first, then its files; the other runbook's are not there
    let by_runbook = json_of(&p, &["artifacts", "list", "--runbook", "two", "--json"]);
    let uris: Vec<&str> = by_runbook
        .as_array()
        .expect("list")
        .iter()
        .map(|a| a["uri"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(uris[0], format!("{evidence}/journal.jsonl"));
    assert_eq!(&uris[1..], held.as_slice());
    // by run id prefix
    let by_run = json_of(&p, &["artifacts", "list", "--run", &id[..8], "--json"]);
    assert_eq!(by_run, by_runbook);
    // unfiltered: the newest run first
    let all = json_of(&p, &["artifacts", "list", "--json"]);
    assert_eq!(all[0]["runbook"], "other", "{all}");
    assert!(
        all.as_array()
            .expect("all")
            .iter()
            .any(|a| a["uri"] == uris[0])
    );
    let one = json_of(&p, &["artifacts", "list", "-n", "1", "--json"]);
    assert_eq!(one.as_array().map(Vec::len), Some(1));
}

#[test]
fn a_run_recorded_under_a_relative_profiles_dir_reads_back_from_anywhere() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (proj, sub) = (tmp.path().join("proj"), tmp.path().join("proj/sub"));
    std::fs::create_dir_all(proj.join(".infra")).expect("mkdir");
    std::fs::create_dir_all(&sub).expect("mkdir");
    // a call made with the profiles directory named relative to where it ran
    let set = crate::infra_in(std::path::Path::new(".infra"), &proj)
        .args(["state", "set", "k", "v"])
        .output()
        .expect("state set");
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    // read from elsewhere, the directory named another way: the index's paths still lead to it
    let list = crate::infra_in(&proj.join(".infra"), &sub)
        .args(["runs", "list", "--json"])
        .output()
        .expect("runs list");
    let runs = crate::stdout_json(&list);
    let id = runs[0]["run_id"]
        .as_str()
        .or_else(|| runs["runs"][0]["run_id"].as_str())
        .unwrap_or_else(|| panic!("a run id in {runs}"))
        .to_owned();
    let show = crate::infra_in(std::path::Path::new("../.infra"), &sub)
        .args(["runs", "show", &id])
        .output()
        .expect("runs show");
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert!(String::from_utf8_lossy(&show.stdout).contains("state.set"));
}
