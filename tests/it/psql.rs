//! `psql` against a real PostgreSQL cluster on loopback (tests/support/postgres.rs): typed rows and
//! hostile parameters, one statement per call, read-only bypass attempts, server-side timeouts and
//! cancels, exports checked by digest, transactions, credentials and a database that is down, and the
//! `db.*` runbooks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::ctx::{Config, Vars};
use engine::run::{CancelToken, Engine, StepOutcome};
use serde_json::{Value, json};

use crate::support::postgres::Postgres;

fn target(pg: &Postgres) -> Value {
    json!({"postgres": {"host": "127.0.0.1", "port": pg.port, "user": pg.user, "database": pg.database,
                        "password_env": "PG_TEST_PASSWORD", "sslmode": "disable"}})
}

fn engine_at(dir: &std::path::Path, pg: &Postgres, targets: Value, unsafe_local: bool) -> Engine {
    std::fs::write(dir.join("targets.json"), targets.to_string()).expect("targets");
    // these tests try the SQL layer's own refusals (read-only transactions and roles) with
    // destructive statements; change control is tested in `change_control.rs`, so policy lets them through
    std::fs::write(dir.join("policy.yaml"), "effects: {destructive: allow}\n").expect("policy");
    let mut c = Config::at(dir).with_vars(Vars::from_pairs([
        ("PG_TEST_PASSWORD", pg.password.clone()),
        ("WRONG_PASSWORD", "not-the-password-1".to_owned()),
    ]));
    c.unsafe_local = unsafe_local;
    Engine::new(c, Arc::new(engine::Catalog::builtin()))
}

fn setup() -> (Postgres, tempfile::TempDir, Engine) {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine_at(dir.path(), &pg, json!({"db": target(&pg)}), false);
    (pg, dir, e)
}

fn call(e: &Engine, args: Value) -> StepOutcome {
    crate::call_tool(e, "psql", args, &CancelToken::new())
}

fn ok(s: &StepOutcome) -> &Value {
    assert!(s.error.is_none(), "{:?}", s.error);
    s.result.as_ref().expect("a result")
}

fn kind(s: &StepOutcome) -> String {
    s.error
        .as_ref()
        .map(|e| e.kind.to_string())
        .unwrap_or_else(|| panic!("expected an error, got {:?}", s.result))
}

const HOSTILE: &[&str] = &[
    "'; DROP TABLE items; --",
    "\" OR 1=1 --",
    "$1",
    "\\x00\\'",
    "multi\nline\ttab",
    "😀 unicode ünïcödé",
    "",
    "NULL",
    "$$ dollar $$",
];

#[test]
fn typed_rows_and_hostile_parameters() {
    let (pg, _dir, e) = setup();
    pg.psql("create table items (id int primary key, name text not null, price numeric(10,2), tags text[], meta jsonb, at timestamptz, day date, uid uuid, ok bool)");
    pg.psql("insert into items values (1, 'one', 12.50, '{a,b}', '{\"k\": [1, 2]}', '2026-01-02 03:04:05+00', '2026-01-02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true), (2, 'two', null, '{}', null, null, null, null, false)");

    let r = call(
        &e,
        json!({"action": "query", "target": "db", "sql": "select * from items where id >= $1 order by id", "params": [1]}),
    );
    let v = ok(&r);
    assert_eq!(v["row_count"], 2);
    assert_eq!(v["columns"][2], json!({"name": "price", "type": "numeric"}));
    assert_eq!(
        v["rows"][0],
        json!({"id": 1, "name": "one", "price": "12.50", "tags": ["a", "b"], "meta": {"k": [1, 2]},
               "at": "2026-01-02T03:04:05Z", "day": "2026-01-02", "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "ok": true})
    );
    assert_eq!(v["rows"][1]["price"], Value::Null);
    assert_eq!(v["rows"][1]["tags"], json!([]));

    for h in HOSTILE {
        let r = call(
            &e,
            json!({"action": "query", "target": "db", "sql": "select $1::text as v, length($1::text) as n", "params": [h]}),
        );
        let row = &ok(&r)["rows"][0];
        assert_eq!(row["v"], *h, "{h:?} changed on the way");
        assert_eq!(row["n"], h.chars().count());
        let r = call(
            &e,
            json!({"action": "exec", "target": "db", "sql": "insert into items (id, name) values ($1, $2)", "params": [100 + HOSTILE.iter().position(|x| x == h).unwrap_or(0), h]}),
        );
        assert_eq!(ok(&r)["rows_affected"], 1);
    }
    assert_eq!(
        pg.psql("select count(*) from items"),
        (2 + HOSTILE.len()).to_string()
    );
    assert_eq!(
        pg.psql("select name from items where id = 100"),
        HOSTILE[0],
        "stored byte for byte"
    );

    // a wrong parameter count is a clear error
    let r = call(
        &e,
        json!({"action": "query", "target": "db", "sql": "select $1::int + $2::int", "params": [1]}),
    );
    assert_eq!(kind(&r), "invalid_args");
    // a SQL error carries the server's code
    let r = call(
        &e,
        json!({"action": "query", "target": "db", "sql": "select * from nowhere"}),
    );
    assert_eq!(kind(&r), "sql_error");
    assert!(
        r.error
            .as_ref()
            .is_some_and(|e| e.message.contains("42P01"))
    );
}

#[test]
fn one_statement_per_call_and_read_only_cannot_be_bypassed() {
    let (pg, dir, e) = setup();
    pg.psql("create table t (x int); insert into t values (1), (2); create sequence s");
    pg.psql("create function bump() returns bigint language sql as 'select nextval(''s'')'");
    let before = pg.psql("select count(*) from t");
    let canary = dir.path().join("program-ran");

    let r = call(
        &e,
        json!({"action": "query", "target": "db", "sql": "select 1; drop table t"}),
    );
    assert_eq!(kind(&r), "refused");
    let r = call(
        &e,
        json!({"action": "exec", "target": "db", "sql": "delete from t where x = 1; drop table t"}),
    );
    assert_eq!(kind(&r), "refused");

    for sql in [
        "SELECT 1; COMMIT; DROP TABLE t".to_owned(),
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d".to_owned(),
        "SET default_transaction_read_only = off".to_owned(),
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE".to_owned(),
        format!("COPY t TO PROGRAM 'touch {}'", canary.display()),
        "DROP TABLE t".to_owned(),
        "select * from t for update".to_owned(),
        "select nextval('s')".to_owned(),
    ] {
        let r = call(
            &e,
            json!({"action": "query", "target": "db", "sql": sql, "read_only": true}),
        );
        assert_eq!(kind(&r), "refused", "{sql}");
    }
    // what the statement does not say, the read-only transaction refuses on the server
    let r = call(
        &e,
        json!({"action": "query", "target": "db", "sql": "select bump()", "read_only": true}),
    );
    assert_eq!(kind(&r), "refused");
    assert!(
        r.error
            .as_ref()
            .is_some_and(|e| e.message.contains("25006"))
    );
    // a target can be read-only for every call
    let mut ro = target(&pg);
    ro["postgres"]["read_only"] = json!(true);
    let e2 = engine_at(dir.path(), &pg, json!({"db": target(&pg), "ro": ro}), false);
    let r = call(
        &e2,
        json!({"action": "exec", "target": "ro", "sql": "delete from t"}),
    );
    assert_eq!(kind(&r), "refused");
    // and its role must be one the server does not let write (here a superuser: refused)
    let r = call(
        &e2,
        json!({"action": "query", "target": "ro", "sql": "select count(*) as n from t"}),
    );
    assert_eq!(kind(&r), "refused");

    assert_eq!(
        pg.psql("select count(*) from t"),
        before,
        "the data is unchanged"
    );
    assert_eq!(
        pg.psql("select nextval('s')"),
        "1",
        "the sequence was not advanced"
    );
    assert!(!canary.exists(), "no program ran");
    assert_eq!(pg.psql("show default_transaction_read_only"), "off");
}

#[test]
fn a_timeout_or_cancel_stops_the_statement_on_the_server() {
    let (pg, _dir, e) = setup();
    let r = call(
        &e,
        json!({"action": "query", "target": "db", "sql": "select pg_sleep(30) as slept", "timeout_ms": 500}),
    );
    assert_eq!(kind(&r), "timeout");
    let gone = || {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let active = pg.psql(
                "select count(*) from pg_stat_activity where query like '%pg_sleep(30)%' and state = 'active' and pid <> pg_backend_pid()",
            );
            if active == "0" {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(gone(), "the timed-out statement still runs on the server");

    let cancel = CancelToken::new();
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| {
            crate::call_tool(
                &e,
                "psql",
                json!({"action": "query", "target": "db", "sql": "select pg_sleep(30) as slept"}),
                &cancel,
            )
        });
        std::thread::sleep(Duration::from_millis(400));
        cancel.cancel();
        h.join().expect("join")
    });
    assert_eq!(kind(&r), "cancelled");
    assert!(gone(), "the cancelled statement still runs on the server");
    // the pool still serves
    assert_eq!(
        ok(&call(
            &e,
            json!({"action": "query", "target": "db", "sql": "select 1 as one"})
        ))["rows"][0]["one"],
        1
    );
}

use crate::sha256_file;

#[test]
fn a_million_row_export_matches_psql_byte_for_byte() {
    let (pg, dir, e) = setup();
    let query = "select g as id, md5(g::text) as h, 'row \"' || g || '\", with comma' as note from generate_series(1, 1000000) g";
    let r = call(
        &e,
        json!({"action": "export", "target": "db", "query": query, "format": "csv", "csv_header": true}),
    );
    let v = ok(&r);
    assert_eq!(v["rows"], 1_000_000);
    let reference = dir.path().join("psql.csv");
    let out = std::process::Command::new(pg.psql_bin())
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            &pg.user,
            "-d",
            &pg.database,
        ])
        .arg("-c")
        .arg(format!(
            "\\copy ({query}) to '{}' csv header",
            reference.display()
        ))
        .env("PGPASSWORD", &pg.password)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["sha256"], sha256_file(&reference).as_str());
    let uri = v["uri"].as_str().expect("uri");
    assert_eq!(
        crate::sha256_reader(crate::open_artifact(dir.path(), uri)),
        sha256_file(&reference)
    );

    // JSON Lines keeps tricky text intact
    pg.psql("create table notes (id int, body text); insert into notes values (1, E'quote \" backslash \\\\ newline \\n tab \\t end'), (2, null)");
    let r = call(
        &e,
        json!({"action": "export", "target": "db", "table": "public.notes", "format": "jsonl"}),
    );
    let v = ok(&r);
    assert_eq!(v["rows"], 2);
    let lines: Vec<Value> = std::io::read_to_string(crate::open_artifact(
        dir.path(),
        v["uri"].as_str().expect("uri"),
    ))
    .expect("read")
    .lines()
    .map(|l| serde_json::from_str(l).expect("json line"))
    .collect();
    assert_eq!(
        lines[0]["body"],
        "quote \" backslash \\ newline \n tab \t end"
    );
    assert_eq!(lines[1], json!({"id": 2, "body": null}));

    // a host path needs the opt-in; a writing query is refused
    let file = dir.path().join("notes.csv");
    let args = json!({"action": "export", "target": "db", "table": "notes", "file_path": file});
    assert_eq!(kind(&call(&e, args.clone())), "refused");
    assert!(!file.exists());
    let r = call(
        &e,
        json!({"action": "export", "target": "db", "query": "delete from notes returning *"}),
    );
    assert_eq!(kind(&r), "refused");
    let e = engine_at(dir.path(), &pg, json!({"db": target(&pg)}), true);
    assert_eq!(ok(&call(&e, args))["rows"], 2);
    assert!(
        std::fs::read_to_string(&file)
            .expect("file")
            .starts_with("id,body\n")
    );
}

#[test]
fn transactions_are_all_or_nothing() {
    let (pg, _dir, e) = setup();
    pg.psql("create table acct (id int primary key, balance int check (balance >= 0)); insert into acct values (1, 100), (2, 0)");
    let r = call(
        &e,
        json!({"action": "transaction", "target": "db", "statements": [
            {"sql": "update acct set balance = balance - $1 where id = 1", "params": [30]},
            {"sql": "update acct set balance = balance + $1 where id = 2", "params": [30]}
        ]}),
    );
    assert_eq!(ok(&r)["committed"], true);
    assert_eq!(pg.psql("select balance from acct order by id"), "70\n30");
    let r = call(
        &e,
        json!({"action": "transaction", "target": "db", "statements": [
            {"sql": "update acct set balance = balance + 1000 where id = 2"},
            {"sql": "update acct set balance = balance - 1000 where id = 1"}
        ]}),
    );
    assert_eq!(kind(&r), "sql_error");
    let err = r.error.as_ref().expect("error");
    assert!(err.message.contains("rolled back"), "{}", err.message);
    assert_eq!(
        err.result.as_ref().map(|v| v["failed_index"].clone()),
        Some(json!(1))
    );
    assert_eq!(
        pg.psql("select balance from acct order by id"),
        "70\n30",
        "nothing changed"
    );
}

#[test]
fn credentials_and_a_database_that_is_down() {
    let (mut pg, dir, _) = setup();
    let mut wrong = target(&pg);
    wrong["postgres"]["password_env"] = json!("WRONG_PASSWORD");
    let url = pg.url();
    let e = engine_at(
        dir.path(),
        &pg,
        json!({"db": target(&pg), "wrong": wrong}),
        false,
    );
    let r = call(
        &e,
        json!({"action": "query", "target": "wrong", "sql": "select 1"}),
    );
    assert_eq!(kind(&r), "auth_failed");
    // a connection URL with its password works, and the password is written nowhere
    let r = call(
        &e,
        json!({"action": "query", "connection": url, "sql": "select current_user as u"}),
    );
    assert_eq!(ok(&r)["rows"][0]["u"], pg.user.as_str());
    // the same server through its Unix socket, a file of this host: only with the opt-in
    let sock = pg.dir.path().join("sock");
    for socket_url in [
        format!(
            "host={} port={} user={} password={} dbname={}",
            sock.display(),
            pg.port,
            pg.user,
            pg.password,
            pg.database
        ),
        format!(
            "postgresql://{}:{}@{}:{}/{}",
            pg.user,
            pg.password,
            sock.display().to_string().replace('/', "%2F"),
            pg.port,
            pg.database
        ),
    ] {
        let r = call(
            &e,
            json!({"action": "query", "connection": socket_url, "sql": "select 1 as one"}),
        );
        assert_eq!(kind(&r), "refused", "{socket_url}: {:?}", r.error);
        let open = engine_at(dir.path(), &pg, json!({"db": target(&pg)}), true);
        let r = call(
            &open,
            json!({"action": "query", "connection": socket_url, "sql": "select 1 as one"}),
        );
        assert_eq!(ok(&r)["rows"][0]["one"], 1, "{socket_url}");
    }
    let r = call(&e, json!({"action": "tables", "target": "db"}));
    assert!(ok(&r)["tables"].is_array());

    pg.stop();
    let r = call(
        &e,
        json!({"action": "query", "target": "db", "sql": "select 1"}),
    );
    assert_eq!(kind(&r), "connect_failed");
    pg.start_again();
    assert_eq!(
        ok(&call(
            &e,
            json!({"action": "query", "target": "db", "sql": "select 2 as two"})
        ))["rows"][0]["two"],
        2,
        "a pooled client that died is replaced"
    );
    let leaks = crate::files_containing(dir.path(), &[&pg.password, "not-the-password-1"]);
    assert!(leaks.is_empty(), "a password was written to {leaks:?}");
}

#[test]
fn tables_describe_and_the_db_runbooks() {
    let (pg, dir, e) = setup();
    pg.psql("create table events (id bigserial primary key, kind text not null default 'x', at timestamptz); create index events_kind on events (kind); insert into events (kind) select 'k' || g from generate_series(1, 50) g");
    let r = call(
        &e,
        json!({"action": "describe", "target": "db", "table": "events"}),
    );
    let v = ok(&r);
    assert_eq!(v["columns"][1]["name"], "kind");
    assert_eq!(v["columns"][1]["nullable"], false);
    assert_eq!(v["columns"][1]["default"], "'x'::text");
    assert!(v["indexes"].to_string().contains("events_kind"));
    assert_eq!(
        kind(&call(
            &e,
            json!({"action": "describe", "target": "db", "table": "nope"})
        )),
        "not_found"
    );
    let r = call(
        &e,
        json!({"action": "tables", "target": "db", "schema": "public"}),
    );
    assert_eq!(ok(&r)["tables"][0]["name"], "events");

    let run = |args: &[&str]| {
        let out = crate::infra_in(dir.path(), dir.path())
            .env("PG_TEST_PASSWORD", &pg.password)
            .args(["run", "--json"])
            .args(args)
            .output()
            .expect("infra run");
        (out.status.code(), crate::stdout_json(&out))
    };
    let (code, v) = run(&[
        "db.export.table",
        "--input",
        "profile_name=db",
        "--input",
        "table=events",
    ]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["outputs"]["rows"], 50);
    let (code, v) = run(&[
        "db.query",
        "--input",
        "target=db",
        "--input",
        "sql=select count(*) as n from events where kind like $1",
        "--input",
        "params=[\"k1%\"]",
    ]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["outputs"]["rows"][0]["n"], 11);
    let (code, v) = run(&[
        "db.query",
        "--input",
        "target=db",
        "--input",
        "sql=delete from events",
    ]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(pg.psql("select count(*) from events"), "50");
}

#[test]
fn large_results_spill_to_an_artifact_and_max_rows_bounds_them() {
    let (_pg, dir, e) = setup();
    let sql = "select g as n, repeat('x', 100) as pad from generate_series(1, $1::int) g";
    let r = call(
        &e,
        json!({"action": "query", "target": "db", "sql": sql, "params": [5000]}),
    );
    let v = ok(&r);
    assert_eq!(v["row_count"], 5000);
    assert_eq!(v["rows_truncated"], true);
    assert_eq!(v["more_rows"], false);
    let kept = v["rows"].as_array().map_or(0, Vec::len);
    assert!(kept > 0 && kept < 5000, "{kept} rows kept in the result");
    assert!(
        v.to_string().len() < 80 * 1024,
        "the result stays near its budget"
    );
    let lines: Vec<Value> = std::io::read_to_string(crate::open_artifact(
        dir.path(),
        v["rows_uri"].as_str().expect("uri"),
    ))
    .expect("rows")
    .lines()
    .map(|l| serde_json::from_str(l).expect("json"))
    .collect();
    assert_eq!(lines.len(), 5000);
    assert_eq!(lines[4999]["n"], 5000);
    assert_eq!(
        lines[..kept],
        v["rows"].as_array().expect("rows")[..],
        "the result is the artifact's start"
    );

    let r = call(
        &e,
        json!({"action": "query", "target": "db", "sql": sql, "params": [5000], "max_rows": 100}),
    );
    let v = ok(&r);
    assert_eq!(
        (v["row_count"].clone(), v["more_rows"].clone()),
        (json!(100), json!(true))
    );
    assert_eq!(v["rows_truncated"], false);
    assert!(v.get("rows_uri").is_none());
}
