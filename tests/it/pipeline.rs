//! `pipeline` against real servers on loopback: PostgreSQL (tests/support/postgres.rs), sshd
//! (tests/support/sshd.rs) and the HTTP test server. Artifact ↔ PostgreSQL, PostgreSQL → SFTP →
//! PostgreSQL, HTTP JSON Lines → PostgreSQL (a million records), a bad record in the middle that
//! leaves the table as it was and is named, sources that die mid-stream, limits, hostile names and
//! values, and the peak memory of a 1 GiB transfer read from `/proc` (not its duration).

use std::sync::Arc;

use engine::ctx::{Config, Vars};
use engine::run::{CancelToken, Engine, StepOutcome};
use serde_json::{Value, json};

use crate::support::http::HttpServer;
use crate::support::postgres::Postgres;
use crate::support::sshd::Sshd;

fn engine(
    dir: &std::path::Path,
    pg: Option<&Postgres>,
    ssh: Option<&Sshd>,
    unsafe_local: bool,
) -> Engine {
    let mut targets = serde_json::Map::new();
    if let Some(pg) = pg {
        targets.insert(
            "db".into(),
            json!({"postgres": {"host": "127.0.0.1", "port": pg.port, "user": pg.user, "database": pg.database,
                                "password_env": "PG_TEST_PASSWORD", "sslmode": "disable"}}),
        );
    }
    if let Some(s) = ssh {
        targets.insert("web".into(), crate::ssh::target(s));
    }
    std::fs::write(dir.join("targets.json"), Value::Object(targets).to_string()).expect("targets");
    // these tests move data, `truncate_first` and DDL included; change control is tested in
    // `change_control.rs`, so policy lets destructive steps through here
    std::fs::write(dir.join("policy.yaml"), "effects: {destructive: allow}\n").expect("policy");
    let mut vars = vec![("HOME", dir.join("home").display().to_string())];
    if let Some(pg) = pg {
        vars.push(("PG_TEST_PASSWORD", pg.password.clone()));
    }
    let mut c = Config::at(dir).with_vars(Vars::from_pairs(vars));
    c.unsafe_local = unsafe_local;
    Engine::new(c, Arc::new(engine::Catalog::builtin()))
}

fn run(e: &Engine, args: Value) -> StepOutcome {
    let mut args = args;
    args["action"] = "run".into();
    crate::call_tool(e, "pipeline", args, &CancelToken::new())
}

fn ok(s: &StepOutcome) -> &Value {
    assert!(s.error.is_none(), "{:?}", s.error);
    s.result.as_ref().expect("a result")
}

fn failed(s: &StepOutcome) -> (&str, &str, Value) {
    let e = s
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("expected an error, got {:?}", s.result));
    (
        e.kind.as_str(),
        e.message.as_str(),
        s.result.clone().unwrap_or(Value::Null),
    )
}

/// A digest of a table's rows in `id` order.
fn digest(pg: &Postgres, table: &str) -> String {
    pg.psql(&format!(
        "select count(*) || ':' || coalesce(md5(string_agg(t::text, '|' order by id)), '') from {table} t"
    ))
}

const HOSTILE: &[&str] = &[
    "'; DROP TABLE src; --",
    "comma, \"quote\"",
    "multi\nline\r\nwith cr",
    "\\.",
    "back\\slash\ttab",
    "",
    "😀 ünïcödé",
    "NULL",
    "$$ dollar $$",
];

const HOSTILE_TABLE: &str = "(id int primary key, \"we\"\"ird, name\" text, \"select\" text, \"ünï 😀\" text, n numeric, j jsonb)";

#[test]
fn artifact_and_postgres_round_trip_hostile_names_and_values() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path(), Some(&pg), None, false);
    pg.psql(&format!("create table src {HOSTILE_TABLE}"));
    pg.psql(&format!("create table dst {HOSTILE_TABLE}"));
    for (i, v) in HOSTILE.iter().enumerate() {
        let q = v.replace('\'', "''");
        pg.psql(&format!(
            "insert into src values ({i}, '{q}', '{q}', null, {i}.5, '{{\"k\": \"{}\"}}')",
            i
        ));
    }
    pg.psql("insert into src values (100, null, '', 'x', null, null)");

    for format in ["csv", "jsonl"] {
        let out = run(
            &e,
            json!({"from": {"type": "psql", "target": "db", "query": "select * from src order by id"},
                   "to": {"type": "artifact", "name": format!("src.{format}")}, "format": format}),
        );
        let v = ok(&out);
        assert_eq!(v["records_read"], 10, "{v}");
        assert_eq!(v["sha256"].as_str().map(str::len), Some(64));
        let uri = v["uri"].as_str().expect("uri").to_owned();

        pg.psql("truncate dst");
        let back = run(
            &e,
            json!({"from": {"type": "artifact", "uri": uri},
                   "to": {"type": "psql", "target": "db", "table": "public.dst"}, "format": format}),
        );
        let b = ok(&back);
        assert_eq!(b["records_written"], 10, "{b}");
        assert_eq!(b["committed"], true);
        assert_eq!(digest(&pg, "dst"), digest(&pg, "src"), "{format}");
    }
    assert_eq!(
        pg.psql("select count(*) from src"),
        "10",
        "nothing was injected"
    );
}

#[test]
fn postgres_to_sftp_and_back_replaces_whole_files() {
    let pg = Postgres::start();
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path(), Some(&pg), Some(&sshd), false);
    pg.psql("create table events (id int primary key, body text)");
    pg.psql(
        "insert into events select i, 'event ' || i || ', \"q\"' from generate_series(1, 20000) i",
    );
    pg.psql("create table copy (id int primary key, body text)");
    let remote = sshd.dir.path().join("out").join("events.csv");
    std::fs::create_dir_all(remote.parent().expect("parent")).expect("mkdir");
    std::fs::write(&remote, "old contents\n").expect("old file");

    let out = run(
        &e,
        json!({"from": {"type": "psql", "target": "db", "table": "events"},
               "to": {"type": "sftp", "target": "web", "path": remote}}),
    );
    let v = ok(&out);
    assert_eq!(v["records_read"], 20000, "{v}");
    assert_eq!(v["remote_path"], remote.display().to_string());
    let text = std::fs::read_to_string(&remote).expect("remote file");
    assert!(
        text.starts_with("id,body\n1,\"event 1, \"\"q\"\"\"\n"),
        "{}",
        &text[..60]
    );
    let sha = std::process::Command::new("sha256sum")
        .arg(&remote)
        .output()
        .expect("sha256sum");
    let sha = String::from_utf8_lossy(&sha.stdout)[..64].to_owned();
    assert_eq!(v["sha256"], sha);
    let siblings: Vec<_> = std::fs::read_dir(remote.parent().expect("parent"))
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(siblings.len(), 1, "no temporary file is left: {siblings:?}");

    let back = run(
        &e,
        json!({"from": {"type": "sftp", "target": "web", "path": remote},
               "to": {"type": "psql", "target": "db", "table": "copy"}}),
    );
    assert_eq!(ok(&back)["records_written"], 20000);
    assert_eq!(digest(&pg, "copy"), digest(&pg, "events"));

    // the built-in runbooks, from the CLI
    let cli = |args: &[&str]| {
        let out = crate::infra_in(dir.path(), dir.path())
            .env("PG_TEST_PASSWORD", &pg.password)
            .env("HOME", dir.path())
            .args(["run", "--json"])
            .args(args)
            .output()
            .expect("infra run");
        (out.status.code(), crate::stdout_json(&out))
    };
    let small = remote.with_file_name("small.csv");
    let (code, v) = cli(&[
        "db.export.sftp",
        "--input",
        "profile_name=db",
        "--input",
        "query=select * from events where id <= 10 order by id",
        "--input",
        "host=web",
        "--input",
        &format!("path={}", small.display()),
    ]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["outputs"]["rows"], 10, "{v}");
    assert_eq!(
        std::fs::read_to_string(&small)
            .expect("small")
            .lines()
            .count(),
        11
    );
    let art = run(
        &e,
        json!({"from": {"type": "psql", "target": "db", "query": "select * from events where id > 19990"},
               "to": {"type": "artifact"}}),
    );
    let uri = ok(&art)["uri"].as_str().expect("uri").to_owned();
    pg.psql("truncate copy");
    let (code, v) = cli(&[
        "db.import.csv",
        "--input",
        "profile_name=db",
        "--input",
        "table=public.copy",
        "--input",
        &format!("uri={uri}"),
    ]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(pg.psql("select count(*), min(id) from copy"), "10|19991");
}

#[test]
fn http_json_lines_load_a_million_rows_and_a_bad_row_changes_nothing() {
    let pg = Postgres::start();
    let mut http = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path(), Some(&pg), None, false);
    pg.psql("create table items (id bigint primary key, name text not null, note text)");

    let out = run(
        &e,
        json!({"from": {"type": "http", "url": http.url("/jsonl/1000000")},
               "to": {"type": "psql", "target": "db", "table": "items"}, "format": "jsonl"}),
    );
    let v = ok(&out);
    assert_eq!(v["records_read"], 1_000_000, "{v}");
    assert_eq!(v["records_written"], 1_000_000);
    assert_eq!(
        pg.psql("select count(*), max(id) from items"),
        "1000000|1000000"
    );
    let notes = crate::support::http::JSONL_NOTES;
    assert_eq!(
        pg.psql("select note from items where id = 3"),
        notes[3 % notes.len()]
    );
    assert_eq!(
        pg.psql("select count(*) from items where note = '\\.'"),
        "142857"
    );
    let before = digest(&pg, "items");

    // a bad record in the middle, even with `truncate_first`: the table is as it was, the record named
    let bad = run(
        &e,
        json!({"from": {"type": "http", "url": http.url("/jsonl/1000000?bad=500001")},
               "to": {"type": "psql", "target": "db", "table": "items", "truncate_first": true,
                      "columns": {"id": "id", "name": "name", "note": "note"}},
               "format": "jsonl"}),
    );
    let (kind, message, result) = failed(&bad);
    assert_eq!(kind, "sql_error", "{message}");
    assert!(message.contains("record 500001, column `id`"), "{message}");
    assert!(message.contains("nothing was loaded"), "{message}");
    assert_eq!(result["record"], 500_001, "{result}");
    assert_eq!(result["committed"], false);
    assert_eq!(digest(&pg, "items"), before);

    // `columns` as a list picks keys; the others are left out
    pg.psql("create table few (id bigint, name text, note text)");
    let out = run(
        &e,
        json!({"from": {"type": "http", "url": http.url("/jsonl/3")},
               "to": {"type": "psql", "target": "db", "table": "few", "columns": ["id", "name"]},
               "format": "jsonl", "max_records": 3}),
    );
    assert_eq!(ok(&out)["records_written"], 3);
    assert_eq!(pg.psql("select count(*) from few where note is null"), "3");
    http.stop();
}

#[test]
fn sources_that_fail_or_overflow_leave_every_sink_as_it_was() {
    let pg = Postgres::start();
    let sshd = Sshd::start();
    let mut http = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path(), Some(&pg), Some(&sshd), false);
    pg.psql("create table items (id bigint primary key, name text, note text)");
    pg.psql("insert into items values (1, 'keep', null)");
    let before = digest(&pg, "items");

    // the HTTP body stops mid-stream (the connection closes early)
    let cut = run(
        &e,
        json!({"from": {"type": "http", "url": http.url("/jsonl/200000?cut=3000000")},
               "to": {"type": "psql", "target": "db", "table": "items", "truncate_first": true},
               "format": "jsonl"}),
    );
    let (_, message, result) = failed(&cut);
    assert!(message.contains("the source failed"), "{message}");
    assert_eq!(result["committed"], false, "{result}");
    assert_eq!(digest(&pg, "items"), before);

    // the query fails on the server mid-stream: the remote file keeps its old contents
    let remote = sshd.dir.path().join("out").join("q.csv");
    std::fs::create_dir_all(remote.parent().expect("parent")).expect("mkdir");
    std::fs::write(&remote, "old\n").expect("old file");
    let died = run(
        &e,
        json!({"from": {"type": "psql", "target": "db",
                        "query": "select i, 1 / (i - 150000) as x from generate_series(1, 200000) i"},
               "to": {"type": "sftp", "target": "web", "path": remote}}),
    );
    let (kind, message, _) = failed(&died);
    assert_eq!(kind, "sql_error", "{message}");
    assert!(message.contains("division by zero"), "{message}");
    assert_eq!(std::fs::read_to_string(&remote).expect("old file"), "old\n");
    let left = std::fs::read_dir(remote.parent().expect("parent"))
        .expect("list")
        .count();
    assert_eq!(left, 1, "the temporary file is removed");

    // limits stop the stream with nothing written: no artifact is left
    for limit in [json!({"max_bytes": 100_000}), json!({"max_records": 10})] {
        let mut args = json!({"from": {"type": "http", "url": http.url("/jsonl/100000")},
                              "to": {"type": "artifact", "name": "part.jsonl"}, "format": "jsonl"});
        args.as_object_mut()
            .expect("object")
            .extend(limit.as_object().expect("object").clone());
        let over = run(&e, args);
        let (kind, message, _) = failed(&over);
        assert_eq!(kind, "too_large", "{message}");
        assert!(!named(dir.path(), "part.jsonl"), "no partial artifact");
    }

    // a credential header of the source is masked wherever the call is recorded
    let secret = "s3cr3t-pipeline-token-7731";
    let r = run(
        &e,
        json!({"from": {"type": "http", "url": http.url("/jsonl/5"), "headers": {"Authorization": format!("Bearer {secret}")}},
               "to": {"type": "artifact"}, "format": "jsonl"}),
    );
    assert_eq!(ok(&r)["records_read"], 5);
    assert_eq!(
        http.requests()
            .last()
            .and_then(|q| q.header("authorization").map(str::to_owned)),
        Some(format!("Bearer {secret}"))
    );
    assert_eq!(
        crate::files_containing(dir.path(), &[secret]),
        Vec::<String>::new()
    );

    // host paths need the opt-in; a raw stream cannot go into a table
    let refused = run(
        &e,
        json!({"from": {"type": "file", "path": "/etc/hostname"}, "to": {"type": "artifact"}}),
    );
    assert_eq!(failed(&refused).0, "refused");
    let raw = run(
        &e,
        json!({"from": {"type": "artifact", "uri": "artifact://x"}, "to": {"type": "psql", "target": "db", "table": "items"}, "format": "raw"}),
    );
    assert_eq!(failed(&raw).0, "invalid_args");
    http.stop();
}

#[test]
fn a_cancel_mid_stream_leaves_the_table_as_it_was() {
    let pg = Postgres::start();
    let mut http = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path(), Some(&pg), None, false);
    pg.psql("create table items (id bigint primary key, name text, note text)");
    pg.psql("insert into items values (0, 'keep', null)");
    let before = digest(&pg, "items");
    let cancel = CancelToken::new();
    let out = std::thread::scope(|s| {
        let (c, h) = (cancel.clone(), &http);
        s.spawn(move || {
            // once the body is on its way
            while h.hits("/jsonl") == 0 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            c.cancel();
        });
        crate::call_tool(
            &e,
            "pipeline",
            json!({"action": "run", "from": {"type": "http", "url": http.url("/jsonl/1000000")},
                   "to": {"type": "psql", "target": "db", "table": "items"}, "format": "jsonl"}),
            &cancel,
        )
    });
    let (kind, message, _) = failed(&out);
    assert_eq!(kind, "cancelled", "{message}");
    assert_eq!(digest(&pg, "items"), before);
    http.stop();
}

/// Whether a file of this name is anywhere under `dir`.
fn named(dir: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            e.file_name() == name || (p.is_dir() && named(&p, name))
        })
}

/// The peak resident memory (`VmHWM`, KiB) of a running process, from `/proc`.
fn peak_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn a_gibibyte_moves_in_bounded_memory() {
    const SIZE: u64 = 1 << 30;
    let sshd = Sshd::start();
    let mut http = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(profiles.join("runbooks")).expect("mkdir");
    std::fs::write(
        profiles.join("targets.json"),
        json!({"web": crate::ssh::target(&sshd)}).to_string(),
    )
    .expect("targets");
    let remote = sshd.dir.path().join("big.bin");
    let runbook = json!({
        "name": "move.big",
        "description": "A large transfer.",
        "steps": [{"id": "move", "tool": "pipeline", "args": {
            "action": "run", "format": "raw", "timeout_ms": 900_000,
            "from": {"type": "http", "url": http.url(&format!("/bytes/{SIZE}"))},
            "to": {"type": "sftp", "target": "web", "path": remote}}}]
    });
    std::fs::write(profiles.join("runbooks/move.big.yaml"), runbook.to_string()).expect("runbook");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_infra"))
        .args(["run", "move.big", "--json"])
        .env_clear()
        .env("MCP_PROFILES_DIR", &profiles)
        .env("HOME", dir.path())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn infra");
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(k) = peak_kib(pid) {
            peak = peak.max(k);
        }
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let len = std::fs::metadata(&remote).expect("moved").len();
    let _ = std::fs::remove_file(&remote);
    http.stop();
    assert_eq!(len, SIZE);
    assert!(peak > 0, "VmHWM was read");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB for 1 GiB moved");
    if let Some(f) = std::env::var_os("PIPELINE_PEAK_FILE") {
        // where a benchmark note can read the figure from
        let _ = std::fs::write(f, format!("{peak}\n"));
    }
}

#[test]
fn json_arrays_and_paginated_apis_load_whole_or_not_at_all() {
    let pg = Postgres::start();
    let mut http = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path(), Some(&pg), None, false);
    pg.psql("create table items (id bigint primary key, name text not null, note text)");

    // a pretty-printed JSON array, streamed into a table
    let out = run(
        &e,
        json!({"from": {"type": "http", "url": http.url("/array/1000")},
               "to": {"type": "psql", "target": "db", "table": "items"}, "format": "json"}),
    );
    assert_eq!(ok(&out)["records_written"], 1000, "{:?}", out.result);
    let notes = crate::support::http::JSONL_NOTES;
    assert_eq!(
        pg.psql("select note from items where id = 2"),
        notes[2 % notes.len()]
    );

    // every style of pagination gives every record once
    for (style, extra) in [
        ("page", json!({})),
        ("offset", json!({})),
        ("cursor", json!({"cursor": "/next_cursor"})),
        ("link", json!({})),
    ] {
        let mut paginate = json!({"style": style, "size": 10, "items": "/data"});
        for (k, v) in extra.as_object().expect("object") {
            paginate[k] = v.clone();
        }
        let out = run(
            &e,
            json!({"from": {"type": "http", "url": http.url(&format!("/pages/95?style={style}")), "paginate": paginate},
                   "to": {"type": "psql", "target": "db", "table": "items", "truncate_first": true},
                   "format": "jsonl"}),
        );
        let v = ok(&out);
        assert_eq!(v["records_written"], 95, "{style}: {v}");
        assert_eq!(v["pages"], 10, "{style}: {v}");
        assert_eq!(
            pg.psql("select count(*), count(distinct id), max(id) from items"),
            "95|95|95",
            "{style}"
        );
    }
    // a million records, paginated
    let out = run(
        &e,
        json!({"from": {"type": "http", "url": http.url("/pages/1000000?style=offset&bare=1"),
                        "paginate": {"style": "offset", "size": 20000, "max_pages": 60}},
               "to": {"type": "psql", "target": "db", "table": "items", "truncate_first": true},
               "format": "jsonl"}),
    );
    assert_eq!(ok(&out)["records_written"], 1_000_000, "{:?}", out.result);
    assert_eq!(
        pg.psql("select count(*), max(id) from items"),
        "1000000|1000000"
    );
    let before = digest(&pg, "items");
    // pages left past `max_pages`: nothing is written
    let capped = run(
        &e,
        json!({"from": {"type": "http", "url": http.url("/pages/95?style=page"),
                        "paginate": {"style": "page", "size": 10, "items": "/data", "max_pages": 3}},
               "to": {"type": "psql", "target": "db", "table": "items", "truncate_first": true},
               "format": "jsonl"}),
    );
    let (kind, message, _) = failed(&capped);
    assert_eq!(kind, "too_large", "{message}");
    assert!(message.contains("max_pages"), "{message}");
    // not an array: refused where it breaks, nothing written
    let broken = run(
        &e,
        json!({"from": {"type": "http", "url": http.url("/jsonl/5")},
               "to": {"type": "psql", "target": "db", "table": "items", "truncate_first": true},
               "format": "json"}),
    );
    let (_, message, _) = failed(&broken);
    assert!(message.contains("not a JSON array at byte 0"), "{message}");
    assert_eq!(digest(&pg, "items"), before);

    // the http tool gathers pages too
    let got = crate::call_tool(
        &e,
        "http",
        json!({"action": "request", "url": http.url("/pages/25?style=cursor"),
               "paginate": {"style": "cursor", "size": 10, "items": "/data"}}),
        &CancelToken::new(),
    );
    let v = ok(&got);
    assert_eq!(
        (v["pages"].as_u64(), v["count"].as_u64()),
        (Some(3), Some(25)),
        "{v}"
    );
    assert_eq!(v["complete"], true);
    assert_eq!(v["items"][24]["id"], 25);
    http.stop();
}

#[test]
fn http_sinks_stream_or_send_batches_and_a_failed_source_sends_nothing() {
    let pg = Postgres::start();
    let mut http = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path(), Some(&pg), None, false);
    pg.psql(
        "create table src (id int primary key, name text); insert into src select i, 'n ' || i from generate_series(1, 25) i",
    );
    let bodies = |path: &str| -> Vec<Vec<u8>> {
        http.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(path))
            .map(|r| r.body)
            .collect()
    };

    // one streamed POST of JSON Lines, then of one JSON array
    let out = run(
        &e,
        json!({"from": {"type": "psql", "target": "db", "query": "select * from src order by id"},
               "to": {"type": "http", "url": http.url("/accept/lines?n=9")}, "format": "jsonl"}),
    );
    assert_eq!(ok(&out)["status"], 200, "{:?}", out.result);
    let got = bodies("/accept/lines");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        25
    );
    let out = run(
        &e,
        json!({"from": {"type": "psql", "target": "db", "query": "select * from src order by id"},
               "to": {"type": "http", "url": http.url("/accept/array?n=9"), "method": "PUT"}, "format": "json"}),
    );
    ok(&out);
    let got = bodies("/accept/array");
    let arr: Value = serde_json::from_slice(&got[0]).expect("a JSON array");
    assert_eq!(arr.as_array().map(Vec::len), Some(25));
    assert_eq!(arr[24]["name"], "n 25");
    assert_eq!(
        http.requests().iter().filter(|r| r.method == "PUT").count(),
        1
    );

    // batches of 10: three requests of 10, 10 and 5 records
    let out = run(
        &e,
        json!({"from": {"type": "psql", "target": "db", "query": "select * from src order by id"},
               "to": {"type": "http", "url": http.url("/accept/batch?n=9"), "batch": 10}, "format": "jsonl"}),
    );
    let v = ok(&out);
    assert_eq!(
        (v["batches"].as_u64(), v["records_written"].as_u64()),
        (Some(3), Some(25)),
        "{v}"
    );
    let sizes: Vec<usize> = bodies("/accept/batch")
        .iter()
        .map(|b| {
            serde_json::from_slice::<Value>(b)
                .expect("array")
                .as_array()
                .map_or(0, Vec::len)
        })
        .collect();
    assert_eq!(sizes, [10, 10, 5]);
    let on: std::collections::HashSet<u64> = http
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/accept/batch"))
        .map(|r| r.connection)
        .collect();
    assert_eq!(on.len(), 1, "the batches share one kept-alive connection");

    // the server refuses the second batch: the rest is not sent, and the result says what was taken
    let refused = run(
        &e,
        json!({"from": {"type": "psql", "target": "db", "query": "select * from src order by id"},
               "to": {"type": "http", "url": http.url("/accept/stop?n=1"), "batch": 10}, "format": "jsonl"}),
    );
    let (kind, message, result) = failed(&refused);
    assert_eq!(kind, "unexpected_status", "{message}");
    assert!(message.contains("batch 2 (records 11–20)"), "{message}");
    assert_eq!(result["batches_accepted"], 1, "{result}");
    assert_eq!(bodies("/accept/stop").len(), 2);

    // a source that dies mid-stream: batches are never sent, a streamed body never ends
    for (name, to) in [
        ("cut-batch", json!({"batch": 10})),
        ("cut-stream", json!({})),
    ] {
        let mut to = to;
        to["type"] = "http".into();
        to["url"] = http.url(&format!("/accept/{name}?n=9")).into();
        let cut = run(
            &e,
            json!({"from": {"type": "http", "url": http.url("/jsonl/1000?cut=20000")}, "to": to, "format": "jsonl"}),
        );
        let (_, message, _) = failed(&cut);
        assert!(message.contains("source failed"), "{name}: {message}");
        assert!(bodies(&format!("/accept/{name}")).is_empty(), "{name}");
    }
    // no spool is left behind
    let leftovers = walkdir(dir.path())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".spool-"))
        })
        .count();
    assert_eq!(leftovers, 0);
    http.stop();
}

fn walkdir(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn the_cli_shows_a_pipelines_records_as_it_runs() {
    let p = crate::project::Project::new()
        .unsafe_local()
        .file("in.csv", "id,name\n1,a\n2,b\n3,c\n")
        .runbook(
            "ship",
            "steps:\n  - id: copy\n    tool: pipeline\n    args: {action: run, from: {type: file, path: in.csv}, to: {type: artifact}}\n",
        );
    let out = p.infra().args(["run", "ship"]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("[ship] copy: 3 records, 20 bytes read"),
        "{err}"
    );
}

#[test]
fn a_transform_reshapes_each_record_and_a_record_it_cannot_read_writes_nothing() {
    let pg = Postgres::start();
    let mut http = HttpServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(dir.path(), Some(&pg), None, false);
    pg.psql("create table people (id bigint primary key, title text, origin text)");
    let out = run(
        &e,
        json!({"from": {"type": "http", "url": http.url("/array/50")},
               "to": {"type": "psql", "target": "db", "table": "people"}, "format": "json",
               "transform": {"select": ["id", "name"], "rename": {"name": "title"},
                             "set": {"origin": "api"}}}),
    );
    assert_eq!(ok(&out)["records_written"], 50, "{:?}", out.result);
    assert_eq!(
        pg.psql(
            "select count(*), max(id), min(origin), max(title) from people where title like 'row %'"
        ),
        "50|50|api|row 9"
    );
    let before = digest(&pg, "people");
    // a record that is not an object, in the middle: named, and the table as it was
    let art = run(
        &e,
        json!({"from": {"type": "http", "url": http.url("/jsonl/3")}, "to": {"type": "artifact", "name": "x.jsonl"},
               "format": "jsonl"}),
    );
    let uri = ok(&art)["uri"].as_str().expect("uri").to_owned();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut crate::open_artifact(dir.path(), &uri), &mut text)
        .expect("read");
    let broken_uri = {
        let lines: Vec<&str> = text.lines().collect();
        let bad = format!("{}\n[1]\n{}\n", lines[0], lines[1]);
        std::fs::write(dir.path().join("bad.jsonl"), bad).expect("write");
        let e2 = engine(dir.path(), Some(&pg), None, true);
        let o = run(
            &e2,
            json!({"from": {"type": "file", "path": dir.path().join("bad.jsonl")},
                   "to": {"type": "psql", "target": "db", "table": "people", "truncate_first": true},
                   "format": "jsonl", "transform": {"rename": {"name": "title"}}}),
        );
        let (_, message, _) = failed(&o);
        assert!(message.contains("record 2: not a JSON object"), "{message}");
        uri
    };
    assert_eq!(digest(&pg, "people"), before);
    // csv has no records to reshape
    let o = run(
        &e,
        json!({"from": {"type": "artifact", "uri": broken_uri}, "to": {"type": "artifact"},
               "format": "csv", "transform": {"drop": ["a"]}}),
    );
    assert_eq!(failed(&o).0, "invalid_args");
    http.stop();
}
