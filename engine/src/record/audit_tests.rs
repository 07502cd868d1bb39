//! Tests of the audit log: the chain, the head kept in the store, checkpoints and seals.
use super::*;
use serde_json::Map;

#[test]
fn records_chain_and_verify() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = Audit::new(dir.path().join("audit.jsonl"));
    for i in 0..5 {
        assert_eq!(
            a.append(&json!({"kind": "call", "i": i}), i % 2 == 0)
                .expect("append"),
            i + 1
        );
    }
    let v = a.verify().expect("verify");
    assert_eq!((v.records, v.problem), (5, None));
    assert_eq!(v.last.map(|h| h.seq), Some(5));
    let tail = a.tail(2).expect("tail");
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[1]["seq"], 5);
}

#[test]
fn an_edited_record_is_found() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
    let a = Audit::new(&path);
    for i in 0..4 {
        a.append(&json!({"kind": "call", "tool": format!("t{i}")}), false)
            .expect("append");
    }
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replace("\"t1\"", "\"tX\"");
    std::fs::write(&path, text).expect("write");
    let v = a.verify().expect("verify");
    let p = v.problem.expect("problem");
    assert_eq!((p.line, p.seq, v.records), (2, 2, 1), "{}", p.message);
    assert!(p.message.contains("changed"), "{}", p.message);
}

#[test]
fn a_removed_record_breaks_the_chain_where_it_was() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
    let a = Audit::new(&path);
    for i in 0..4 {
        a.append(&json!({"kind": "call", "i": i}), false)
            .expect("append");
    }
    let text = std::fs::read_to_string(&path).expect("read");
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&path, kept.join("\n") + "\n").expect("write");
    let p = a.verify().expect("verify").problem.expect("problem");
    assert_eq!((p.line, p.seq), (2, 2), "{}", p.message);
}

#[test]
fn a_torn_last_line_is_reported_and_appends_go_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, store) = kept(dir.path());
    let path = a.path().to_owned();
    a.append(&json!({"kind": "call"}), false).expect("append");
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    f.write_all(b"{\"seq\":2,\"ts\":\"x\",\"pr").expect("torn");
    drop(f);
    // at the end, nothing shows the chain goes on: reported
    let p = a.verify().expect("verify").problem.expect("torn");
    assert_eq!((p.line, p.seq), (2, 2));
    assert!(p.message.contains("torn"), "{}", p.message);
    // another process appends (this one's memory of the end is stale): it goes on from record 1
    let b = Audit::new(&path).with_keeper(store.clone());
    assert_eq!(
        b.append(&json!({"kind": "call"}), false)
            .expect("append after a crash"),
        2
    );
    assert_eq!(a.append(&json!({"kind": "call"}), true).expect("append"), 3);
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "the torn line stays, ended by a newline");
    let second: Value = serde_json::from_str(lines[2]).expect("record");
    assert_eq!(second["prev"], sha_hex(lines[0].as_bytes()));
    // the chain, the anchor and the seals go on being checked past the torn line, which is noted
    let v = verify_kept(&a, &store);
    assert_eq!((v.records, &v.problem), (3, &None), "{:?}", v.notes);
    assert_eq!(
        v.torn,
        vec![Torn {
            file: path.display().to_string(),
            line: 2,
            after: 1,
            terminated: true
        }]
    );
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("line 2 of") && n.contains("torn")),
        "{:?}",
        v.notes
    );
    assert_eq!(v.to_json()["torn"][0]["line"], 2);
}

#[test]
fn torn_lines_in_a_row_and_across_a_rotation_leave_one_chain() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
    let a = Audit::new(&path).with_rotation(Some(1000));
    let tear = |text: &[u8]| {
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(text).expect("torn");
    };
    a.append(&json!({"kind": "call"}), false).expect("append");
    tear(b"{\"seq\":2,\"t");
    // an append that died after the newline it puts after a torn line, and one cut in its record
    tear(b"\n");
    tear(b"{\"seq\":2,\"ts\":\"2026");
    let b = Audit::new(&path).with_rotation(Some(1000));
    assert_eq!(
        b.append(&json!({"kind": "call"}), false).expect("append"),
        2
    );
    let v = b.verify().expect("verify");
    assert_eq!((v.records, v.problem), (2, None));
    assert_eq!(
        v.torn.iter().map(|t| (t.line, t.after)).collect::<Vec<_>>(),
        [(2, 1), (3, 1)]
    );
    // a file past the size whose last line is torn is rotated as it is: the new file goes on from
    // the last complete record
    b.append(&json!({"kind": "call", "pad": "x".repeat(1000)}), false)
        .expect("append");
    tear(b"{\"seq\":4,");
    assert_eq!(
        b.append(&json!({"kind": "call"}), false).expect("append"),
        4
    );
    assert_eq!(b.files().len(), 2);
    // and a new file whose only line is torn goes on from the rotated file
    std::fs::rename(&path, dir.path().join("audit.2.jsonl")).expect("rotate");
    std::fs::write(&path, "{\"seq\":5,\"ts").expect("torn");
    assert_eq!(
        b.append(&json!({"kind": "call"}), false).expect("append"),
        5
    );
    let v = b.verify().expect("verify");
    assert_eq!((v.records, v.problem.clone()), (5, None), "{v:?}");
    assert_eq!(
        v.torn
            .iter()
            .map(|t| (t.line, t.after, t.terminated))
            .collect::<Vec<_>>(),
        [(2, 1, true), (3, 1, true), (6, 3, false), (1, 4, true)]
    );
}

#[test]
fn records_after_a_torn_line_are_still_checked() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = AuditKey::new("a key kept from the agent, 32 bytes+");
    let path = dir.path().join("audit.jsonl");
    let a = Audit::new(&path).with_key(Some(key.clone()));
    a.append(&json!({"kind": "call", "tool": "t0"}), false)
        .expect("append");
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    f.write_all(b"{\"seq\":2,\"ts\":").expect("torn");
    drop(f);
    for i in 1..4 {
        a.append(&json!({"kind": "call", "tool": format!("t{i}")}), false)
            .expect("append");
    }
    let clean = std::fs::read_to_string(&path).expect("read");
    let v = a.verify().expect("verify");
    assert_eq!((v.records, v.problem, v.torn.len()), (4, None, 1));

    // a record after the torn line edited
    std::fs::write(&path, clean.replace("\"t2\"", "\"tX\"")).expect("edit");
    let p = a.verify().expect("verify").problem.expect("edited");
    assert_eq!((p.line, p.seq), (4, 3), "{}", p.message);
    assert!(p.message.contains("changed"), "{}", p.message);

    // forged with a recomputed chain: the seal still finds it
    std::fs::write(&path, &clean).expect("restore");
    let mut lines: Vec<String> = clean.lines().map(str::to_owned).collect();
    let torn = lines.remove(1);
    let rest = dir.path().join("rest.jsonl");
    std::fs::write(&rest, lines.join("\n") + "\n").expect("write");
    forge(&rest, 3, |l| l.replace("\"t2\"", "\"tX\""));
    let forged = std::fs::read_to_string(&rest).expect("read");
    let mut forged: Vec<&str> = forged.lines().collect();
    forged.insert(1, &torn);
    std::fs::write(&path, forged.join("\n") + "\n").expect("write");
    assert_eq!(Audit::new(&path).verify().expect("verify").problem, None);
    let p = a.verify().expect("verify").problem.expect("forged");
    assert_eq!((p.line, p.seq), (4, 3), "{}", p.message);
    assert!(p.message.contains("`mac` does not match"), "{}", p.message);

    // a record replaced by garbage: the next one names the replaced record, not the one before
    let lines: Vec<&str> = clean.lines().collect();
    let mut replaced = lines.clone();
    replaced[3] = "{\"seq\":3,\"ts\":\"2026";
    std::fs::write(&path, replaced.join("\n") + "\n").expect("write");
    let v = a.verify().expect("verify");
    let p = v.problem.expect("replaced");
    assert_eq!((p.line, p.seq, v.records), (4, 3, 2), "{}", p.message);
    assert!(p.message.contains("replaced"), "{}", p.message);
    assert_eq!(v.torn.len(), 1, "the crash's torn line is still only noted");

    // and so does the log cut after a torn line it ends with
    std::fs::write(&path, lines[..3].join("\n") + "\n" + "{\"seq\":").expect("write");
    let p = a
        .verify()
        .expect("verify")
        .problem
        .expect("torn at the end");
    assert_eq!((p.line, p.seq), (4, 3), "{}", p.message);
    assert!(p.message.contains("torn"), "{}", p.message);
}

#[test]
fn two_writers_keep_one_chain() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
    std::thread::scope(|s| {
        for t in 0..4 {
            let a = Audit::new(&path);
            s.spawn(move || {
                for i in 0..25 {
                    a.append(&json!({"kind": "call", "t": t, "i": i}), false)
                        .expect("append");
                }
            });
        }
    });
    let v = Audit::new(&path).verify().expect("verify");
    assert_eq!((v.records, v.problem), (100, None));
}

#[test]
fn an_unwritable_log_is_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    // a directory where the file should be
    let path = dir.path().join("audit.jsonl");
    std::fs::create_dir(&path).expect("dir");
    assert!(
        Audit::new(&path)
            .append(&json!({"kind": "call"}), true)
            .is_err()
    );
}

/// A log that keeps its head in a real store in the same directory, as the engine's does.
fn kept(dir: &Path) -> (Audit, Arc<crate::store::LazyStore>) {
    let store = Arc::new(crate::store::LazyStore::new(dir.join("store.sqlite3")));
    let audit = Audit::new(dir.join("audit.jsonl")).with_keeper(store.clone());
    (audit, store)
}

fn verify_kept(audit: &Audit, store: &crate::store::LazyStore) -> Verified {
    // as the engine does before it verifies: the head waiting in this process is written
    audit.flush_head();
    let s = store.get().expect("store");
    let anchor = Anchor::Store {
        head: s.audit_head().expect("head"),
        runs: s.runs_count().expect("runs"),
    };
    audit
        .verify_with(&VerifyOptions {
            anchor,
            checkpoint: None,
        })
        .expect("verify")
}

#[test]
fn a_tail_cut_at_a_record_boundary_is_reported_with_what_is_missing() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, store) = kept(dir.path());
    for i in 0..5 {
        a.append(&json!({"kind": "call", "i": i}), i == 0)
            .expect("append");
    }
    let v = verify_kept(&a, &store);
    assert_eq!((v.records, v.problem, v.notes.len()), (5, None, 0));
    let text = std::fs::read_to_string(a.path()).expect("read");
    let kept: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(a.path(), kept).expect("cut");
    // the chain alone cannot tell
    assert_eq!(a.verify().expect("verify").problem, None);
    let v = verify_kept(&a, &store);
    let p = v.problem.expect("a cut tail");
    assert_eq!((p.line, p.seq, v.records), (4, 4, 3), "{}", p.message);
    assert!(p.message.contains("ends at record 3"), "{}", p.message);
    assert!(
        p.message.contains("records 4 to 5 are missing"),
        "{}",
        p.message
    );
    // one record cut
    let text: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
    std::fs::write(a.path(), text).expect("cut");
    let p = verify_kept(&a, &store).problem.expect("a cut tail");
    assert!(p.message.contains("record 5 is missing"), "{}", p.message);
}

#[test]
fn an_emptied_or_deleted_log_is_reported() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, store) = kept(dir.path());
    for _ in 0..3 {
        a.append(&json!({"kind": "call"}), false).expect("append");
    }
    std::fs::write(a.path(), "").expect("empty");
    let p = verify_kept(&a, &store).problem.expect("emptied");
    assert!(p.message.contains("is empty"), "{}", p.message);
    assert!(
        p.message.contains("records 1 to 3 are missing"),
        "{}",
        p.message
    );
    std::fs::remove_file(a.path()).expect("delete");
    let p = verify_kept(&a, &store).problem.expect("deleted");
    assert!(p.message.contains("is missing"), "{}", p.message);
    // a new record in a new log does not move the head back
    a.append(&json!({"kind": "call"}), false).expect("append");
    let p = verify_kept(&a, &store).problem.expect("started again");
    assert!(
        p.message.contains("records 2 to 3 are missing"),
        "{}",
        p.message
    );
}

#[test]
fn a_deleted_log_is_reported_when_the_store_lists_runs_but_kept_no_head() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = crate::store::LazyStore::new(dir.path().join("store.sqlite3"));
    let a = Audit::new(dir.path().join("audit.jsonl"));
    let v = verify_kept(&a, &store);
    assert_eq!(v.problem, None, "no runs, no records: nothing is missing");
    store
        .get()
        .expect("store")
        .run_started(
            "r1",
            "call",
            dir.path(),
            None,
            "2026-01-01T00:00:00Z",
            false,
        )
        .expect("run");
    let p = verify_kept(&a, &store).problem.expect("deleted");
    assert!(p.message.contains("is missing"), "{}", p.message);
    assert!(p.message.contains("lists 1 runs"), "{}", p.message);
}

#[test]
fn a_log_rewritten_to_the_same_length_is_reported_at_the_head() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, store) = kept(dir.path());
    for i in 0..3 {
        a.append(&json!({"kind": "call", "tool": format!("t{i}")}), false)
            .expect("append");
    }
    // a whole new chain of three records, written without the store
    std::fs::remove_file(a.path()).expect("delete");
    let forger = Audit::new(a.path());
    for _ in 0..3 {
        forger
            .append(&json!({"kind": "call", "tool": "innocent"}), false)
            .expect("append");
    }
    assert_eq!(forger.verify().expect("verify").problem, None);
    let p = verify_kept(&a, &store).problem.expect("rewritten");
    assert_eq!((p.line, p.seq), (3, 3), "{}", p.message);
    assert!(p.message.contains("rewritten"), "{}", p.message);
}

#[test]
fn two_writers_with_their_own_stores_keep_one_head() {
    let dir = tempfile::tempdir().expect("tmp");
    std::thread::scope(|s| {
        for t in 0..4 {
            // each as its own process would: its own log handle and store connection
            let (a, _store) = kept(dir.path());
            s.spawn(move || {
                for i in 0..25 {
                    a.append(&json!({"kind": "call", "t": t, "i": i}), i % 5 == 0)
                        .expect("append");
                }
            });
        }
    });
    let (a, store) = kept(dir.path());
    let v = verify_kept(&a, &store);
    assert_eq!(
        (v.records, v.problem, v.notes.len()),
        (100, None, 0),
        "{:?}",
        v.notes
    );
    assert_eq!(
        store.get().expect("store").audit_head().expect("head"),
        v.last
    );
}

#[test]
fn checkpoints_read_as_a_word_a_line_or_json() {
    let hash = "ab".repeat(32);
    let want = Head {
        seq: 12,
        hash: hash.clone(),
        ts: String::new(),
    };
    assert_eq!(
        Head::parse_checkpoint(&format!("12:{hash}\n")),
        Ok(want.clone())
    );
    assert_eq!(
        Head::parse_checkpoint(&format!(
            "kept on paper: 12:{} (monday)",
            hash.to_uppercase()
        )),
        Ok(want.clone())
    );
    let json = json!({"seq": 12, "hash": hash, "ts": "2026-01-01T00:00:00.000Z"}).to_string();
    let parsed = Head::parse_checkpoint(&json).expect("json");
    assert_eq!((parsed.seq, parsed.hash), (12, want.hash.clone()));
    assert_eq!(
        Head::parse_checkpoint(&want.checkpoint()).map(|h| h.seq),
        Ok(12)
    );
    for bad in [
        "",
        "12",
        "0:ab",
        &format!("0:{hash}"),
        &format!("x:{hash}"),
        "{\"seq\": 3}",
    ] {
        assert!(Head::parse_checkpoint(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_checkpoint_finds_a_history_rewritten_with_its_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, store) = kept(dir.path());
    for i in 0..3 {
        a.append(&json!({"kind": "call", "i": i}), false)
            .expect("append");
    }
    let checkpoint = verify_kept(&a, &store).last.expect("a head");
    assert_eq!(checkpoint.seq, 3);
    for i in 3..5 {
        a.append(&json!({"kind": "call", "i": i}), false)
            .expect("append");
    }
    let with = |a: &Audit, cp: &Head| {
        a.verify_with(&VerifyOptions {
            anchor: Anchor::None,
            checkpoint: Some(cp.clone()),
        })
        .expect("verify")
    };
    let v = with(&a, &checkpoint);
    assert_eq!(v.problem, None);
    assert!(
        v.notes.iter().any(|n| n.contains("record 3 is in the log")),
        "{:?}",
        v.notes
    );
    // someone who can write both replaces the log and the store with a new, longer history
    let other = tempfile::tempdir().expect("tmp");
    let (forged, forged_store) = kept(other.path());
    for i in 0..6 {
        forged
            .append(&json!({"kind": "call", "i": i, "tool": "innocent"}), false)
            .expect("append");
    }
    assert_eq!(verify_kept(&forged, &forged_store).problem, None);
    let p = with(&forged, &checkpoint).problem.expect("rewritten");
    assert_eq!((p.line, p.seq), (3, 3), "{}", p.message);
    assert!(
        p.message.contains("rewritten since the checkpoint"),
        "{}",
        p.message
    );
    // or with a shorter one
    std::fs::write(forged.path(), "").expect("empty");
    let p = with(&forged, &checkpoint).problem.expect("cut");
    assert!(
        p.message.contains("records 1 to 3 are missing"),
        "{}",
        p.message
    );
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn hmac_sha256_matches_rfc_4231() {
    // test cases 1, 2, 6 (a key longer than the block) and 7
    let long_key = [0xaau8; 131];
    let cases: [(&[u8], &[u8], &str); 4] = [
        (
            &[0x0b; 20],
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            &long_key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            &long_key,
            b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ];
    for (key, data, want) in cases {
        assert_eq!(hmac_sha256(key, data).to_vec(), unhex(want));
    }
}

/// Rewrites record `at` (1-based) with `edit` and recomputes the plain chain from there on (`prev`
/// and `hash`), as someone without the key can; each `mac` stays as it was.
fn forge(path: &Path, at: usize, edit: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(path).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[at - 1] = edit(&lines[at - 1]);
    for i in at - 1..lines.len() {
        let mut v: Map<String, Value> = serde_json::from_str(&lines[i]).expect("record");
        if i > 0 {
            v.insert("prev".into(), sha_hex(lines[i - 1].as_bytes()).into());
        }
        v.shift_remove("hash");
        let mut line = serde_json::to_vec(&Value::Object(v)).expect("json");
        let seal = sha_hex(&line);
        line.pop();
        line.extend_from_slice(format!(",\"hash\":\"{seal}\"}}").as_bytes());
        lines[i] = String::from_utf8(line).expect("utf-8");
    }
    std::fs::write(path, lines.join("\n") + "\n").expect("write");
}

#[test]
fn a_forged_record_with_a_recomputed_chain_is_found_with_the_key_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = AuditKey::new("a key kept from the agent, 32 bytes+");
    let sealed = Audit::new(dir.path().join("audit.jsonl")).with_key(Some(key.clone()));
    for i in 0..4 {
        sealed
            .append(&json!({"kind": "call", "tool": format!("t{i}")}), false)
            .expect("append");
    }
    let v = sealed.verify().expect("verify");
    assert_eq!((v.records, v.problem), (4, None));
    assert_eq!(
        v.macs,
        Macs {
            sealed: 4,
            unsealed: 0,
            checked: true
        }
    );
    let plain = Audit::new(sealed.path());
    forge(sealed.path(), 2, |l| l.replace("\"t1\"", "\"tX\""));
    // without the key the chain is whole again, and verify says what it could not check
    let v = plain.verify().expect("verify");
    assert_eq!(v.problem, None);
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("4 records carry a `mac`; they were not checked")),
        "{:?}",
        v.notes
    );
    let p = sealed.verify().expect("verify").problem.expect("forged");
    assert_eq!((p.line, p.seq), (2, 2), "{}", p.message);
    assert!(p.message.contains("`mac` does not match"), "{}", p.message);
    // a seal taken away is missed too
    forge(sealed.path(), 2, |l| {
        let mut v: Map<String, Value> = serde_json::from_str(l).expect("record");
        v.shift_remove("mac");
        Value::Object(v).to_string()
    });
    assert_eq!(plain.verify().expect("verify").problem, None);
    let p = sealed.verify().expect("verify").problem.expect("unsealed");
    assert!(p.message.contains("record 2 has no `mac`"), "{}", p.message);
    // and another key does not check
    let other = Audit::new(sealed.path()).with_key(Some(AuditKey::new("another key entirely")));
    let p = other.verify().expect("verify").problem.expect("wrong key");
    assert_eq!(p.seq, 1, "{}", p.message);
}

#[test]
fn records_before_the_key_was_set_are_noted_not_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
    Audit::new(&path)
        .append(&json!({"kind": "call"}), false)
        .expect("append");
    let key = AuditKey::new("the key from now on");
    let sealed = Audit::new(&path).with_key(Some(key));
    sealed
        .append(&json!({"kind": "call", "mac": "mine"}), false)
        .expect("append");
    let v = sealed.verify().expect("verify");
    assert_eq!(v.problem, None);
    assert_eq!((v.macs.unsealed, v.macs.sealed), (1, 1));
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("records 1 to 1 carry no `mac`")),
        "{:?}",
        v.notes
    );
    assert_eq!(format!("{:?}", sealed.key), "Some(AuditKey(..))");
}

#[test]
fn appenders_that_keep_the_file_open_see_each_other_and_a_replaced_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
    // two appenders on one path, as two processes would be
    let (a, b) = (Audit::new(&path), Audit::new(&path));
    for i in 0..6 {
        let who = if i % 3 == 0 { &b } else { &a };
        assert_eq!(
            who.append(&json!({"kind": "call", "i": i}), false)
                .expect("append"),
            i + 1
        );
    }
    let v = a.verify().expect("verify");
    assert_eq!((v.records, v.problem), (6, None));
    // the log renamed away and a new one started elsewhere under its name: a new chain there
    std::fs::rename(&path, dir.path().join("old.jsonl")).expect("rename");
    assert_eq!(
        a.append(&json!({"kind": "call"}), false).expect("append"),
        1
    );
    assert_eq!(
        b.append(&json!({"kind": "call"}), false).expect("append"),
        2
    );
    let v = b.verify().expect("verify");
    assert_eq!((v.records, v.problem), (2, None));
    // cut back by someone else: the next record follows what is there, so only the cut shows
    let text = std::fs::read_to_string(&path).expect("read");
    let first = text.lines().next().expect("a line").to_owned() + "\n";
    std::fs::write(&path, &first).expect("cut");
    assert_eq!(
        a.append(&json!({"kind": "call"}), false).expect("append"),
        2
    );
    let v = a.verify().expect("verify");
    assert_eq!((v.records, v.problem), (2, None));
}

#[test]
fn a_rotated_log_is_one_chain_across_files_from_two_writers() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
    // two appenders, each with its own open file and memory of the end, as two processes have
    let a = Audit::new(&path).with_rotation(Some(600));
    let b = Audit::new(&path).with_rotation(Some(600));
    std::thread::scope(|s| {
        for w in [&a, &b] {
            s.spawn(move || {
                for i in 0..40 {
                    w.append(
                        &json!({"kind": "call", "i": i, "pad": "x".repeat(40)}),
                        false,
                    )
                    .expect("append");
                }
            });
        }
    });
    let files = a.files();
    assert!(files.len() >= 5, "{files:?}");
    assert_eq!(files[0], dir.path().join("audit.1.jsonl"));
    assert_eq!(files.last(), Some(&path));
    let v = a.verify().expect("verify");
    assert_eq!((v.records, v.problem.clone()), (80, None), "{v:?}");
    assert_eq!(v.files.len(), files.len());
    // every rotated file reached the size first; the chain's `seq` goes on in the next file
    let mut seq = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        if f != &path {
            assert!(text.len() >= 600, "{}", f.display());
        }
        for line in text.lines() {
            seq += 1;
            let r: Value = serde_json::from_str(line).expect("record");
            assert_eq!(r["seq"], seq);
        }
    }
    let tail = a.tail(100).expect("tail");
    assert_eq!(tail.len(), 80, "tail reads across the files");
    assert_eq!(
        (tail[0]["seq"].as_u64(), tail[79]["seq"].as_u64()),
        (Some(1), Some(80))
    );

    // a record changed in a rotated file is found there
    let second = dir.path().join("audit.2.jsonl");
    let text = std::fs::read_to_string(&second).expect("read");
    std::fs::write(&second, text.replacen("\"call\"", "\"cell\"", 1)).expect("write");
    let p = a.verify().expect("verify").problem.expect("a problem");
    assert_eq!(p.file, second.display().to_string());
    assert_eq!(p.line, 1);
}

#[test]
fn a_crash_between_rename_and_record_leaves_a_chain_that_goes_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("audit.jsonl");
    let a = Audit::new(&path).with_rotation(Some(1 << 20));
    for i in 0..3 {
        a.append(&json!({"kind": "call", "i": i}), false)
            .expect("append");
    }
    // what a rotation leaves when the process dies right after the rename
    std::fs::rename(&path, dir.path().join("audit.1.jsonl")).expect("rename");
    assert_eq!(a.verify().expect("verify").problem, None);
    let b = Audit::new(&path);
    assert_eq!(b.append(&json!({"kind": "call"}), true).expect("append"), 4);
    let v = b.verify().expect("verify");
    assert_eq!((v.records, v.problem), (4, None));
    // the first appender sees its file gone and goes on in the new one
    assert_eq!(
        a.append(&json!({"kind": "call"}), false).expect("append"),
        5
    );
    assert_eq!(a.verify().expect("verify").records, 5);
}

/// The old way a record was laid out: a map of `seq`, `ts`, `prev`, then the fields cut as the log
/// cuts them, written by serde_json.
fn cut(v: &Value) -> Value {
    match v {
        Value::String(s) if s.len() > MAX_FIELD => {
            let mut at = MAX_FIELD;
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            Value::String(format!("{}… ({} bytes)", &s[..at], s.len()))
        }
        Value::Array(a) => Value::Array(a.iter().take(100).map(cut).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), cut(x))).collect()),
        other => other.clone(),
    }
}

#[test]
fn long_fields_are_cut_in_place_and_the_line_is_laid_out_as_a_map_would_be() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = Audit::new(dir.path().join("audit.jsonl"));
    // a multi-byte character across the cut, 150 items, nesting, and keys the log owns
    let long = format!("{}é{}", "a".repeat(MAX_FIELD - 1), "b".repeat(500));
    let fields = json!({
        "kind": "intent", "seq": 99, "hash": "x",
        "args": {"text": long, "list": (0..150).collect::<Vec<u32>>(), "deep": [{"s": "q\"\n"}]},
        "ok": true, "n": 1.5,
    });
    a.append(&json!({"kind": "run_started"}), false)
        .expect("first");
    a.append(&fields, false).expect("second");
    let text = std::fs::read_to_string(a.path()).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let written: Map<String, Value> = serde_json::from_str(lines[1]).expect("record");
    let mut expected = Map::new();
    expected.insert("seq".into(), 2.into());
    expected.insert("ts".into(), written["ts"].clone());
    expected.insert("prev".into(), sha_hex(lines[0].as_bytes()).into());
    for (k, v) in fields.as_object().expect("object") {
        if !matches!(k.as_str(), "seq" | "ts" | "prev" | "mac" | "hash") {
            expected.insert(k.clone(), cut(v));
        }
    }
    let body = serde_json::to_string(&Value::Object(expected)).expect("json");
    let (head, hash) = split_last(lines[1].as_bytes(), "hash").expect("sealed");
    assert_eq!(String::from_utf8_lossy(&head), body);
    assert_eq!(hash, sha_hex(body.as_bytes()).as_bytes());
    assert_eq!(written["args"]["list"].as_array().map(Vec::len), Some(100));
    assert!(
        written["args"]["text"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("… ({} bytes)", long.len())))
    );
    assert_eq!(a.verify().expect("verify").problem, None);
}

#[test]
fn a_typed_record_is_written_as_its_value_would_be() {
    use crate::record::{AuditKind, AuditRecord};
    let dir = tempfile::tempdir().expect("tmp");
    let typed = Audit::new(dir.path().join("a/audit.jsonl"));
    let valued = Audit::new(dir.path().join("b/audit.jsonl"));
    let small = AuditRecord {
        run_id: Some("r1".into()),
        step: Some("call".into()),
        attempt: Some(1),
        args: Some(json!({"action": "get", "key": "k\"é", "list": [1, 2.5, null]})),
        ok: Some(true),
        duration_ms: Some(3),
        ..AuditRecord::new(AuditKind::Outcome)
    };
    let long = AuditRecord {
        args: Some(json!({"text": "x".repeat(MAX_FIELD + 1), "n": (0..101).collect::<Vec<u32>>()})),
        ..small.clone()
    };
    let long_name = AuditRecord {
        runbook: Some("r".repeat(MAX_FIELD + 1)),
        ..AuditRecord::new(AuditKind::RunStarted)
    };
    let empty = AuditRecord::new(AuditKind::Call);
    for r in [&small, &long, &long_name, &empty] {
        typed.record(r, false).expect("typed");
        valued.append(&r.to_value(), false).expect("valued");
    }
    // the same bytes but for when each was written (and so the hashes)
    let timeless = |a: &Audit| -> Vec<String> {
        std::fs::read_to_string(a.path())
            .expect("read")
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("record");
                let ts = v["ts"].as_str().expect("ts");
                let prev = v["prev"].as_str().expect("prev");
                let l = l.replace(ts, "").replace(prev, "");
                l[..l.find(",\"hash\":").expect("hash")].to_owned()
            })
            .collect()
    };
    assert_eq!(timeless(&typed), timeless(&valued));
    assert!(timeless(&typed)[2].contains(&format!("… ({} bytes)", MAX_FIELD + 1)));
    assert_eq!(typed.verify().expect("verify").problem, None);
}

#[test]
fn verify_sees_no_problem_while_another_writer_appends_and_rotates() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, store) = kept(dir.path());
    let a = a.with_rotation(Some(2000));
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..1500 {
                a.append(
                    &json!({"kind": "call", "i": i, "pad": "x".repeat(i % 200)}),
                    i % 50 == 0,
                )
                .expect("append");
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // another process's handle on the log and the store, the head read while the log is locked
        let reader = Audit::new(a.path());
        let anchor = || {
            let s = store.get().expect("store");
            Anchor::Store {
                head: s.audit_head().expect("head"),
                runs: s.runs_count().expect("runs"),
            }
        };
        let mut rounds = 0;
        while rounds < 20 || !done.load(std::sync::atomic::Ordering::SeqCst) {
            let v = reader.verify_reading(None, anchor).expect("verify");
            assert_eq!(v.problem, None, "round {rounds}: {v:?}");
            rounds += 1;
        }
    });
    assert!(a.files().len() > 10, "it rotated while verify read");
    let v = verify_kept(&a, &store);
    assert_eq!((v.records, v.problem), (1500, None));
}

#[test]
fn a_log_made_while_verify_finds_none_is_read_with_its_anchor() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, store) = kept(dir.path());
    let reader = Audit::new(a.path());
    // another writer makes the log and its first record just as verify, having found no log, reads
    // the store's head
    let appended = std::cell::Cell::new(false);
    let anchor = || {
        if !appended.replace(true) {
            a.append(&json!({"kind": "call"}), true).expect("append");
            a.flush_head();
        }
        let s = store.get().expect("store");
        Anchor::Store {
            head: s.audit_head().expect("head"),
            runs: s.runs_count().expect("runs"),
        }
    };
    let v = reader.verify_reading(None, anchor).expect("verify");
    assert_eq!((v.records, v.problem), (1, None));
}

/// A keeper that says a head is due every `every`th time it is asked, and notes each head it keeps
/// with the last record the log had synced when it was handed over.
#[derive(Debug)]
struct Watch {
    syncs: Arc<Syncs>,
    every: u64,
    asked: std::sync::atomic::AtomicU64,
    kept: Mutex<Vec<(u64, u64)>>,
}

impl HeadKeeper for Watch {
    fn due(&self) -> bool {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .is_multiple_of(self.every)
    }

    fn keep(&self, head: &Head) {
        let synced = self.syncs.seq.load(std::sync::atomic::Ordering::SeqCst);
        self.kept.lock().expect("kept").push((head.seq, synced));
    }
}

fn watched(dir: &Path, every: u64) -> (Audit, Arc<Watch>) {
    let a = Audit::new(dir.join("audit.jsonl"));
    let watch = Arc::new(Watch {
        syncs: a.syncs(),
        every,
        asked: Default::default(),
        kept: Mutex::default(),
    });
    (a.with_keeper(watch.clone()), watch)
}

#[test]
fn a_kept_head_always_names_a_synced_record() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, watch) = watched(dir.path(), 4);
    for i in 0..40u64 {
        a.append(&json!({"kind": "call", "i": i}), i % 15 == 7)
            .expect("append");
    }
    a.flush_head();
    let kept = watch.kept.lock().expect("kept").clone();
    assert!(
        kept.iter().all(|(head, synced)| head <= synced),
        "a head was kept before its record was synced: {kept:?}"
    );
    assert_eq!(kept.last(), Some(&(40, 40)), "flush keeps the last head");
    // one sync per due head, per durable record and for the flush: never one per record
    let syncs = a.syncs().count.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(syncs, kept.len() as u64);
    assert!(syncs < 15, "{syncs} syncs for 40 records");
}

#[test]
fn a_burst_of_records_costs_one_sync_and_the_waiting_head_is_kept_at_drop() {
    let dir = tempfile::tempdir().expect("tmp");
    // due only the first time it is asked
    let (a, watch) = watched(dir.path(), u64::MAX);
    for _ in 0..100 {
        a.append(&json!({"kind": "call"}), false).expect("append");
    }
    assert_eq!(a.syncs().count.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(*watch.kept.lock().expect("kept"), [(1, 1)]);
    let syncs = a.syncs();
    drop(a);
    assert_eq!(
        *watch.kept.lock().expect("kept"),
        [(1, 1), (100, 100)],
        "dropping the log syncs it and keeps the head that waited"
    );
    assert_eq!(syncs.count.load(std::sync::atomic::Ordering::SeqCst), 2);

    // with the store: the head it holds after a burst is a synced record's, and the flush's is the last
    let (a, store) = kept(dir.path());
    for _ in 0..200 {
        a.append(&json!({"kind": "call"}), false).expect("append");
    }
    let head = store.get().expect("store").audit_head().expect("head");
    let synced = a.syncs().seq.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        head.as_ref()
            .is_some_and(|h| h.seq > 100 && h.seq <= synced),
        "{head:?}, synced to {synced}"
    );
    a.flush_head();
    let head = store.get().expect("store").audit_head().expect("head");
    assert_eq!(head.map(|h| h.seq), Some(300));
    assert_eq!(a.syncs().seq.load(std::sync::atomic::Ordering::SeqCst), 300);
}
