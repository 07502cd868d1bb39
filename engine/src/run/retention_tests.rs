//! Tests of the automatic pass: it audits its intent before it deletes anything.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::*;
use crate::catalog::Catalog;
use crate::ctx::Config;

fn engine(dir: &Path) -> Engine {
    Engine::new(Config::at(dir), Arc::new(Catalog::builtin()))
}

/// `n` runs that succeeded 40 days ago (past the default 30), each with its directory.
fn old_runs(e: &Engine, n: usize) -> Vec<PathBuf> {
    let s = e.store().expect("store");
    let started = (crate::ctx::now_utc() - chrono::Duration::days(40))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    (0..n)
        .map(|i| {
            let id = format!("old{i}");
            let dir = e.config.runs_dir().join("old").join(&id);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("journal.jsonl"), "{}\n").expect("journal");
            s.run_started(&id, "old", &dir, None, &started, false)
                .expect("row");
            s.run_finished(&id, "succeeded", false).expect("end");
            dir
        })
        .collect()
}

fn records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}

#[test]
fn the_automatic_pass_deletes_nothing_when_its_intent_cannot_be_audited() {
    let tmp = tempfile::tempdir().expect("tmp");
    // a directory where the log should be: no record can be written
    std::fs::create_dir(tmp.path().join("audit.jsonl")).expect("dir");
    let e = engine(tmp.path());
    let dirs = old_runs(&e, 3);
    let err = e.auto_pass().expect_err("refused");
    assert!(err.contains("nothing was pruned"), "{err}");
    assert!(err.contains("audit.jsonl"), "{err}");
    assert_eq!(e.store().expect("store").runs_count().expect("count"), 3);
    assert!(dirs.iter().all(|d| d.exists()));
}

#[test]
fn the_automatic_pass_audits_its_intent_first_and_only_when_something_is_due() {
    let tmp = tempfile::tempdir().expect("tmp");
    let e = engine(tmp.path());
    assert_eq!(e.auto_pass(), Ok(None), "nothing is past the retention");
    assert!(records(tmp.path()).is_empty(), "and nothing is audited");

    let tmp = tempfile::tempdir().expect("tmp");
    let e = engine(tmp.path());
    let dirs = old_runs(&e, 3);
    let out = e.auto_pass().expect("pass").expect("pruned");
    assert_eq!(out.runs, 3);
    assert!(dirs.iter().all(|d| !d.exists()));
    let recs = records(tmp.path());
    let kinds: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or_default(),
                r["front_end"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(kinds, [("intent", "auto"), ("pruned", "auto")]);
    assert_eq!(recs[1]["pruned"]["runs"], 3);
    assert_eq!(
        e.auto_pass(),
        Ok(None),
        "one pass a minute, whichever process asks"
    );
}
