//! Retention: `infra runs prune` by age, by count and for failed runs, a live run never pruned, dry
//! runs, calls journals removed only when nothing points into them and nobody writes them, the
//! automatic pass (at most once a minute, bounded), refusals in the audit log, 20,000 runs; and the
//! audit log's rotation: a chain across files, a tampered older file named, a crash between the
//! rename and the next record, two writer processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use engine::record::evidence::SessionJournal;
use engine::store::Store;
use serde_json::Value;

use crate::project::Project;
use crate::stdout_json;

/// A time `days` ago, as the run index writes times.
fn ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn store(p: &Project) -> Store {
    Store::open(&p.path().join("store.sqlite3")).expect("store")
}

/// A run of `runbook` that started `days` ago and ended with `status` (`None`: still running, owned
/// by this test's process, which is alive), with a directory holding its journal.
fn synth(
    s: &Store,
    p: &Project,
    runbook: &str,
    days: i64,
    status: Option<&str>,
) -> (String, PathBuf) {
    let id = engine::ctx::new_id();
    let dir = p
        .path()
        .join("runs")
        .join(runbook)
        // the whole id: among 20,000 runs of one second, 8 hex digits would collide
        .join(format!("2020-01-01T000000Z-{id}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("journal.jsonl"), "{\"kind\":\"run_started\"}\n").expect("journal");
    s.run_started(&id, runbook, &dir, None, &ago(days), false)
        .expect("row");
    if let Some(st) = status {
        s.run_finished(&id, st, false).expect("end");
    }
    (id, dir)
}

fn ids(s: &Store) -> Vec<String> {
    s.runs(100_000)
        .expect("runs")
        .into_iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Every record of the audit log, across its rotated files, in order.
fn audit(p: &Project) -> Vec<Value> {
    audit_files(p)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).expect("a record"))
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// `audit.1.jsonl`, `audit.2.jsonl`, …, then `audit.jsonl` when it exists.
fn audit_files(p: &Project) -> Vec<PathBuf> {
    let mut n = 1;
    let mut out = Vec::new();
    while p.path().join(format!("audit.{n}.jsonl")).exists() {
        out.push(p.path().join(format!("audit.{n}.jsonl")));
        n += 1;
    }
    if p.path().join("audit.jsonl").exists() {
        out.push(p.path().join("audit.jsonl"));
    }
    out
}

fn prune(p: &Project, dry_run: bool) -> Value {
    let mut args = vec!["runs", "prune", "--json"];
    if dry_run {
        args.push("--dry-run");
    }
    let out = p.infra().args(&args).output().expect("infra");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_json(&out)
}

#[test]
fn prune_goes_by_age_keeps_failed_runs_longer_and_a_dry_run_deletes_nothing() {
    let p = Project::new();
    let s = store(&p);
    let old_ok: Vec<_> = (0..3)
        .map(|_| synth(&s, &p, "deploy", 40, Some("succeeded")))
        .collect();
    let old_failed: Vec<_> = (0..2)
        .map(|_| synth(&s, &p, "deploy", 40, Some("failed")))
        .collect();
    let ancient_failed = synth(&s, &p, "deploy", 100, Some("cancelled"));
    let fresh: Vec<_> = (0..2)
        .map(|_| synth(&s, &p, "deploy", 1, Some("succeeded")))
        .collect();

    let dry = prune(&p, true);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["runs"], 4, "{dry}");
    assert_eq!(dry["dirs"], 4, "{dry}");
    assert!(dry["bytes"].as_u64().unwrap_or(0) > 0, "{dry}");
    assert_eq!(ids(&s).len(), 8, "a dry run deletes no row");
    assert!(old_ok.iter().all(|(_, d)| d.exists()), "nor a directory");

    let done = prune(&p, false);
    assert_eq!(
        (done["runs"].as_u64(), done["dirs"].as_u64()),
        (Some(4), Some(4)),
        "{done}"
    );
    assert_eq!(done["bytes"], dry["bytes"]);
    let left = ids(&s);
    for (id, dir) in old_ok.iter().chain([&ancient_failed]) {
        assert!(!left.contains(id) && !dir.exists(), "{id} was pruned");
    }
    for (id, dir) in old_failed.iter().chain(&fresh) {
        assert!(left.contains(id) && dir.exists(), "{id} is kept");
    }
    let pruned: Vec<Value> = audit(&p)
        .into_iter()
        .filter(|r| r["kind"] == "pruned")
        .collect();
    assert_eq!(
        pruned.len(),
        1,
        "one record for the prune, none for the dry run"
    );
    assert_eq!(pruned[0]["front_end"], "cli");
    assert_eq!(pruned[0]["pruned"]["runs"], 4);
    assert!(
        audit(&p)
            .iter()
            .any(|r| r["kind"] == "intent" && r["action"] == "prune"),
        "the prune's intent is written before it deletes"
    );
    // nothing is left to prune
    assert_eq!(prune(&p, false)["runs"], 0);
}

#[test]
fn directories_left_without_a_row_go_once_they_are_old() {
    let p = Project::new();
    let s = store(&p);
    let (kept_id, kept) = synth(&s, &p, "deploy", 1, Some("succeeded"));
    let stale = p.path().join("runs/deploy/2020-01-01T000000Z-deadbeef");
    let fresh = p.path().join("runs/deploy/2026-01-01T000000Z-cafebabe");
    for d in [&stale, &fresh] {
        std::fs::create_dir_all(d).expect("mkdir");
        std::fs::write(d.join("journal.jsonl"), "{}\n").expect("write");
    }
    // untouched for 100 days, past every retention (90 for failed runs)
    std::fs::File::open(&stale)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(100 * 86_400)))
        .expect("mtime");
    assert_eq!(prune(&p, true)["orphans"], 1);
    assert!(stale.exists());
    let out = prune(&p, false);
    assert_eq!(
        (out["orphans"].as_u64(), out["runs"].as_u64()),
        (Some(1), Some(0)),
        "{out}"
    );
    assert!(!stale.exists(), "an old directory no row names goes");
    assert!(fresh.exists(), "a new one may be a run that is starting");
    assert!(kept.exists() && ids(&s).contains(&kept_id));
}

#[test]
fn prune_keeps_the_newest_max_runs() {
    let p = Project::new().file("policy.yaml", "retention: {max_runs: 3}\n");
    let s = store(&p);
    let runs: Vec<_> = (0..6)
        .map(|i| synth(&s, &p, "backup", 6 - i, Some("succeeded")))
        .collect();
    assert_eq!(prune(&p, false)["runs"], 3);
    let left = ids(&s);
    for (i, (id, dir)) in runs.iter().enumerate() {
        assert_eq!(left.contains(id), i >= 3, "run {i}");
        assert_eq!(dir.exists(), i >= 3, "run {i}'s directory");
    }
}

#[test]
fn a_live_run_is_never_pruned_whatever_its_age() {
    let p = Project::new()
        .unsafe_local()
        .file("policy.yaml", "retention: {max_runs: 1}\n");
    let pidfile = p.path().join("sleeper.pid");
    let p = p.runbook(
        "slow",
        &format!(
            "name: slow\nsteps:\n  - {{id: wait, tool: local, args: {{action: exec, command: 'echo $$ > {}; exec sleep 30'}}}}\n",
            pidfile.display()
        ),
    );
    let mut child = p
        .command()
        .args(["run", "slow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("infra run");
    let sleeper = crate::pid_written(&pidfile, 20);
    assert!(!sleeper.is_empty(), "the run started");
    let s = store(&p);
    let slow = s.runs_of(Some("slow"), "", 1).expect("runs");
    let slow_id = slow[0]["id"].as_str().expect("id").to_owned();
    let slow_dir = PathBuf::from(slow[0]["dir"].as_str().expect("dir"));
    assert_eq!(slow[0]["state"], "running");
    // a row 100 days old whose owner (this test) is alive, one that is old and finished, and a newer
    // one: with `max_runs: 1` every run but the newest is past the policy
    let (ours, ours_dir) = synth(&s, &p, "held", 100, None);
    let (old, _) = synth(&s, &p, "done", 100, Some("succeeded"));
    let (newest, _) = synth(&s, &p, "done", 0, Some("succeeded"));
    // make `newest` the newest: it started just now, after the sleeping run
    let out = prune(&p, false);
    assert_eq!(out["runs"], 1, "only the finished old run: {out}");
    let left = ids(&s);
    assert!(!left.contains(&old));
    for id in [&slow_id, &ours, &newest] {
        assert!(left.contains(id), "{id} is kept");
    }
    assert!(slow_dir.join("journal.jsonl").exists() && ours_dir.exists());

    let _ = std::process::Command::new("kill")
        .args(["-9", &sleeper])
        .status();
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the step was killed");
    // once it ended, the run is past the policy like any other (its own end may have pruned it)
    prune(&p, false);
    let left = ids(&s);
    assert!(!left.contains(&slow_id) && !slow_dir.exists());
    assert!(left.contains(&ours), "the row whose owner lives stays");
}

/// Sets a file's modification time `secs` seconds back.
fn age_file(path: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(secs)))
        .expect("mtime");
}

#[test]
fn a_calls_journal_goes_only_when_no_run_points_into_it_and_its_writer_is_gone() {
    let p = Project::new();
    let s = store(&p);
    let calls = p.path().join("runs/.calls");
    let record = |sj: &SessionJournal, days: i64| {
        let j = sj.journal().expect("journal");
        let id = engine::ctx::new_id();
        let dir = p.path().join("runs/state.get").join(&id[..8]);
        s.run_started(&id, "state.get", &dir, Some(&j), &ago(days), false)
            .expect("row");
        s.run_finished(&id, "succeeded", false).expect("end");
    };
    // all its runs are old, its writer is gone
    let j1 = SessionJournal::create(&calls).expect("j1");
    record(&j1, 40);
    record(&j1, 40);
    let j1 = {
        let path = j1.path().to_owned();
        drop(j1);
        path
    };
    // one run is fresh
    let j2 = SessionJournal::create(&calls).expect("j2");
    record(&j2, 40);
    record(&j2, 1);
    let j2 = {
        let path = j2.path().to_owned();
        drop(j2);
        path
    };
    // no run, but its writer (this test) is alive
    let held = SessionJournal::create(&calls).expect("j3");
    // no run, writer gone, but new: its writer may not have locked it yet
    let j4 = SessionJournal::create(&calls)
        .expect("j4")
        .path()
        .to_owned();
    for j in [&j1, &j2, held.path()] {
        age_file(j, 7200);
    }

    let dry = prune(&p, true);
    assert_eq!(
        (dry["runs"].as_u64(), dry["journals"].as_u64()),
        (Some(3), Some(1)),
        "{dry}"
    );
    assert!(j1.exists(), "a dry run deletes nothing");
    let done = prune(&p, false);
    assert_eq!(
        (done["runs"].as_u64(), done["journals"].as_u64()),
        (Some(3), Some(1)),
        "{done}"
    );
    assert!(!j1.exists(), "no run points into it and nobody writes it");
    assert!(j2.exists(), "a kept run points into it");
    assert!(held.path().exists(), "its writer is alive");
    assert!(j4.exists(), "it is new");
    // the kept run still reads back from its journal
    let kept = s.runs(10).expect("runs");
    assert_eq!(kept.len(), 1);
    engine::store::JournalAt::of(&kept[0])
        .read()
        .expect("its journal is there");
}

#[test]
fn the_automatic_pass_runs_at_most_once_a_minute_and_is_bounded() {
    let p = Project::new().runbook(
        "touch",
        "name: touch\nsteps:\n  - {id: s, tool: state, args: {action: set, key: k, value: 1}}\n",
    );
    let s = store(&p);
    for _ in 0..250 {
        synth(&s, &p, "old", 40, Some("succeeded"));
    }
    assert_eq!(s.last_pass().expect("pass"), None);
    let run = |p: &Project| {
        let out = p.infra().args(["run", "touch"]).output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&p);
    let (first_at, passes) = s.last_pass().expect("pass").expect("a pass ran");
    assert_eq!(passes, 1);
    // one pass removes at most 200 runs: 50 old ones wait, besides the run itself
    assert_eq!(s.runs_count().expect("count"), 51);
    let auto: Vec<Value> = audit(&p)
        .into_iter()
        .filter(|r| r["kind"] == "pruned")
        .collect();
    assert_eq!(auto.len(), 1);
    assert_eq!(auto[0]["front_end"], "auto");
    assert_eq!(auto[0]["pruned"]["runs"], 200);
    assert_eq!(auto[0]["pruned"]["more"], true);

    for _ in 0..3 {
        synth(&s, &p, "old", 40, Some("succeeded"));
    }
    run(&p);
    // within the minute: no second pass, from another process either
    assert_eq!(s.last_pass().expect("pass"), Some((first_at, 1)));
    assert_eq!(s.runs_count().expect("count"), 55);
    assert_eq!(prune(&p, false)["runs"], 53, "the rest is `runs prune`'s");
}

#[test]
fn refusals_are_audited_and_change_nothing() {
    let p = Project::new();
    let s = store(&p);
    let (id, dir) = synth(&s, &p, "old", 40, Some("succeeded"));
    let out = p
        .infra()
        .env("INFRA_READ_ONLY", "1")
        .args(["runs", "prune"])
        .output()
        .expect("infra");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("read-only") && err.contains("nothing was pruned"),
        "{err}"
    );
    // a dry run is not a change
    let out = p
        .infra()
        .env("INFRA_READ_ONLY", "1")
        .args(["runs", "prune", "--dry-run", "--json"])
        .output()
        .expect("infra");
    assert_eq!(stdout_json(&out)["runs"], 1);
    assert!(ids(&s).contains(&id) && dir.exists());

    let bad = Project::new().file("policy.yaml", "retention:\n  max_age_days: 0\n");
    let out = bad.infra().args(["runs", "prune"]).output().expect("infra");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has errors"), "{err}");

    let refused = |p: &Project| -> Vec<Value> {
        audit(p)
            .into_iter()
            .filter(|r| r["kind"] == "refused" && r["action"] == "prune")
            .collect()
    };
    let r = refused(&p);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["policy"]["rule"], "INFRA_READ_ONLY");
    assert_eq!(r[0]["front_end"], "cli");
    assert_eq!(refused(&bad)[0]["policy"]["rule"], "policy_invalid");
}

#[test]
fn twenty_thousand_runs_are_pruned() {
    let p = Project::new();
    let s = store(&p);
    for _ in 0..20_000 {
        synth(&s, &p, "bulk", 40, Some("succeeded"));
    }
    synth(&s, &p, "bulk", 1, Some("succeeded"));
    let done = prune(&p, false);
    assert_eq!(
        (done["runs"].as_u64(), done["dirs"].as_u64()),
        (Some(20_000), Some(20_000)),
        "{done}"
    );
    assert_eq!(s.runs_count().expect("count"), 1);
    let dirs = std::fs::read_dir(p.path().join("runs/bulk"))
        .expect("dir")
        .count();
    assert_eq!(dirs, 1);
}

const STEPS: &str = "name: touch\nsteps:\n  - {id: a, tool: state, args: {action: set, key: a, value: 1}}\n  - {id: b, tool: state, args: {action: set, key: b, value: 2}}\n  - {id: c, tool: state, args: {action: set, key: c, value: 3}}\n";

fn verify(p: &Project) -> Value {
    let out = p
        .infra()
        .args(["audit", "verify", "--json"])
        .output()
        .expect("verify");
    stdout_json(&out)
}

/// The records' `seq` are 1, 2, 3, … across the files.
fn assert_one_chain(p: &Project) -> usize {
    let all = audit(p);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r["seq"].as_u64(), Some(i as u64 + 1), "{r}");
    }
    all.len()
}

#[test]
fn the_audit_log_rotates_and_verify_spans_its_files() {
    let p = Project::new()
        .file("policy.yaml", "audit: {rotate_bytes: 2000}\n")
        .runbook("touch", STEPS);
    for _ in 0..4 {
        let out = p.infra().args(["run", "touch"]).output().expect("run");
        assert!(out.status.success());
    }
    let files = audit_files(&p);
    assert!(files.len() >= 3, "{files:?}");
    for f in &files[..files.len() - 1] {
        let len = std::fs::metadata(f).expect("file").len();
        assert!(len >= 2000, "{} rotated at {len} bytes", f.display());
    }
    let total = assert_one_chain(&p);
    let v = verify(&p);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"].as_u64(), Some(total as u64));
    assert_eq!(v["files"].as_array().map(Vec::len), Some(files.len()));
    // `tail` reads back across the files
    let out = p
        .infra()
        .args(["audit", "tail", "-n", "100000", "--json"])
        .output()
        .expect("tail");
    let tail: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(tail.len(), total);
    assert_eq!(tail[0]["seq"], 1);

    // a crash between the rename and the next record: no `audit.jsonl`; the next record chains on
    let next = files.len();
    std::fs::rename(
        p.path().join("audit.jsonl"),
        p.path().join(format!("audit.{next}.jsonl")),
    )
    .expect("rename");
    assert_eq!(
        verify(&p)["ok"],
        true,
        "a chain that ends in a rotated file verifies"
    );
    let out = p.infra().args(["run", "touch"]).output().expect("run");
    assert!(out.status.success());
    assert_one_chain(&p);
    assert_eq!(verify(&p)["ok"], true);

    // a record changed in an older file is found, and the file named
    let first = p.path().join("audit.1.jsonl");
    let text = std::fs::read_to_string(&first).expect("read");
    let changed = text.replacen("\"kind\":\"run_started\"", "\"kind\":\"run_startex\"", 1);
    assert_ne!(text, changed);
    std::fs::write(&first, changed).expect("write");
    let v = verify(&p);
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["problem"]["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("audit.1.jsonl")),
        "{v}"
    );
    let out = p
        .infra()
        .args(["audit", "verify"])
        .output()
        .expect("verify");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BROKEN") && text.contains("audit.1.jsonl"),
        "{text}"
    );
}

#[test]
fn two_writer_processes_rotate_one_chain() {
    let p = Project::new()
        .file("policy.yaml", "audit: {rotate_bytes: 1500}\n")
        .runbook("touch", STEPS);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..5 {
                    let out = p.infra().args(["run", "touch"]).output().expect("run");
                    assert!(out.status.success());
                }
            });
        }
    });
    assert!(audit_files(&p).len() >= 4, "{:?}", audit_files(&p));
    assert_one_chain(&p);
    let started = audit(&p)
        .iter()
        .filter(|r| r["kind"] == "run_started")
        .count();
    assert_eq!(started, 10, "no record lost");
    let v = verify(&p);
    assert_eq!(v["ok"], true, "{v}");
}
